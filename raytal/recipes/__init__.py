"""The papers' methods as recipes (``registry.Recipe``), composed into labeling and training objectives.

Importing the package registers the built-in recipes, in the order their stages apply.
"""

from raytal.recipes import npl, apl, ntc, noco, gaufuse  # registration order matters

__all__ = ["npl", "apl", "ntc", "noco", "gaufuse"]
