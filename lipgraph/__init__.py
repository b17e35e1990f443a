"""lipgraph: certified upper and realised lower bounds on the Lipschitz constant of ONNX models."""
from lipgraph.errors import InputError, RuleNotApplicable
from lipgraph.labels import Bound, Label
from lipgraph.registry import Kind, Rule, Slopes, rule

__version__ = "0.1.0"
__all__ = ["Bound", "InputError", "Kind", "Label", "Rule", "RuleNotApplicable", "Slopes", "rule", "__version__"]
