"""Studies composed from the library (HMC against SGD, ensembles, SGLD, MFVI);
presets and reports arrive with the experiments issue."""
