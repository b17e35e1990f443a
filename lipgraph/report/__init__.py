"""Reports: one document (the JSON view model of design §5) and its renderings; ``FORMATS``
is the registry ``--format`` offers."""
from lipgraph.report.document import FORMATS, dumps, summary_line, to_json, to_text

__all__ = ["FORMATS", "dumps", "summary_line", "to_json", "to_text"]
