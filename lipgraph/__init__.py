"""lipgraph: certified upper and realised lower bounds on the Lipschitz constant of ONNX models."""
from lipgraph.api import MethodValue, NodeRow, Report, analyze, analyze_module
from lipgraph.errors import InputError, RuleNotApplicable, SemanticMismatch
from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, Slopes, rule
from lipgraph.version import __version__

__all__ = ["Bound", "InputError", "Kind", "Label", "MethodValue", "NodeRow", "Report", "Rule", "RuleNotApplicable",
           "SemanticMismatch", "Slopes", "analyze", "analyze_module", "rule", "__version__"]
