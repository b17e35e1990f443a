"""The text rendering of ``lipgraph certify``'s document (``lipgraph.robust.certify``)."""
from __future__ import annotations


def render(doc: dict) -> str:
    bound = doc["model_bound"]
    lines = [f"lipgraph {doc['lipgraph']}  certify {doc['model']}  ({doc['inputs']} inputs, {doc['classes']} classes, "
             f"domain {doc['domain']}, norm l2)",
             f"model bound L = {bound['value']:.6g} [{bound['label']}, {bound['method']}]" if bound
             else "model bound: none certified (every radius is 0)"]
    finite = [b["value"] for b in doc["margin_bounds"] if b["value"] is not None]
    if finite:
        lines.append(f"margin bounds L_ij (f_i − f_j as its own network): {len(doc['margin_bounds'])} pairs, "
                     f"from {min(finite):.6g} to {max(finite):.6g}" + (f" (√2·L = {2 ** 0.5 * bound['value']:.6g})"
                                                                       if bound else ""))
    lines.append(f"clean accuracy {doc['clean_accuracy']:.4f}")
    lines += ["", f"{'eps':>10}  {'certified':>10}  {'attacked':>10}"]
    for row in doc["table"]:
        attacked = f"{row['attacked_accuracy']:.4f}" if row["attacked_accuracy"] is not None else "—"
        lines.append(f"{row['eps']:>10.4g}  {row['certified_accuracy']:>10.4f}  {attacked:>10}")
    lines.append("")
    lines.append("certified: the fraction of inputs classified correctly with certified ℓ2 radius > eps "
                 "(radius = min_j margin_j / L_yj)" + ("; attacked: correct after an ℓ2 PGD attack at eps, "
                                                       "confirmed by onnxruntime" if doc["table"] and
                                                       doc["table"][0]["attacked_accuracy"] is not None else ""))
    return "\n".join(lines) + "\n"
