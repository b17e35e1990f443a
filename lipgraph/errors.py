"""Exceptions with a meaning for the command line, and its exit codes."""

#: 0 certified (and ≤ --fail-above); 1 finished, not certified or above; 2 bad usage or input;
#: 3 internal error (a bug).
EXIT_OK, EXIT_NOT_CERTIFIED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class LipgraphError(Exception):
    """Base class."""


class InputError(LipgraphError):
    """Bad usage or bad input: one line on stderr, exit code 2."""


class RuleNotApplicable(LipgraphError):
    """A rule cannot handle this node (e.g. Mul of two computed tensors).

    The annotate pass collects these; the node then has no bound (∞) and a diagnostic.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SemanticMismatch(LipgraphError):
    """lipgraph's execution or shapes disagree with onnxruntime's on this model (a bug in a rule
    or in the loader): nothing is certified; exit code 3 with a request to report the model."""


class NotLipschitz(RuleNotApplicable):
    """The op is not Lipschitz at all (discontinuous: Sign, Round, Floor, Ceil, …); the annotate
    pass reports it with the ``not-lipschitz`` code. Reasons start with "not Lipschitz:"."""
