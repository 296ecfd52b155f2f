"""The methods `compare` runs, in its order, and their names in tables and figures
(`llc_vs_generalization` draws them in the same colours)."""

METHODS = ("hmc", "sgd", "deep_ensemble", "sgld", "csghmc", "mfvi")
LABELS = {"hmc": "HMC", "sgd": "SGD", "deep_ensemble": "deep ensemble", "sgld": "SGLD",
          "csghmc": "cyclical SGHMC", "mfvi": "MFVI"}
