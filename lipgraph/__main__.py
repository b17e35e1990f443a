from lipgraph.cli import console_entry

console_entry()
