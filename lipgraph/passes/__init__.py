"""The passes that compute bounds, in order. ``PASSES`` is the only place a method is wired:
a pass runs when one of the methods it produces is asked for, or when a later pass that runs
requires it; it reads the context and returns a ``PassResult`` (see ``lipgraph.context``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lipgraph.passes import autolip_pass, box, chains, lipsdp_pass, lower_pass


@dataclass(frozen=True)
class Pass:
    name: str
    produces: tuple[str, ...]          # method names
    requires: tuple[str, ...]          # names of passes whose artefacts it reads
    run: Callable                      # run(ctx, progress) -> PassResult


PASSES: tuple[Pass, ...] = (
    Pass("box", (), (), box.run),   # value ranges on the input box (nothing without a domain)
    Pass("autolip", ("autolip", "autolip-power"), ("box",), autolip_pass.run),
    Pass("seqlip", ("seqlip", "seqlip-greedy"), ("autolip",), chains.run),
    Pass("lipsdp", ("lipsdp",), ("seqlip",), lipsdp_pass.run),
    Pass("lower", ("lower",), (), lower_pass.run),
)


def scheduled(methods: tuple[str, ...]) -> list[Pass]:
    """The passes to run for ``methods``, in order: those producing a requested method, plus
    what they require. ``autolip`` always runs: it is the headline certified bound."""
    wanted = {p.name for p in PASSES if p.name == "autolip" or set(p.produces) & set(methods)}
    for p in reversed(PASSES):
        if p.name in wanted:
            wanted.update(p.requires)
    return [p for p in PASSES if p.name in wanted]
