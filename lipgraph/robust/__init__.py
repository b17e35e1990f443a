"""Certified robustness of a classifier (``lipgraph certify``): each input's certified ℓ2 radius
from its logit margins and certified Lipschitz bounds of those margins, certified accuracy at
each ε, and optionally the accuracy under an ℓ2 PGD attack at the same ε.

For an input x of label y predicted correctly, every j ≠ y has margin m_j(x) = f_y(x) − f_j(x) > 0,
and m_j is L_yj-Lipschitz, so no perturbation of ℓ2 norm below m_j(x)/L_yj reaches f_j ≥ f_y:
the certified radius is r(x) = min_j m_j(x)/L_yj (0 for a misclassified input). ``margin``
bounds each L_yj as its own network, the model followed by the affine row e_y − e_j, so every
method applies to it; ``attack`` runs the PGD attack; ``certify`` assembles the document.
"""
from lipgraph.robust.certify import certify

__all__ = ["certify"]
