"""XGBoost surrogate of Rwp(mask), one module per job.

* :mod:`~motex_stream.model.features`: the feature matrix of masks (numpy only);
* :mod:`~motex_stream.model.hyperparameters`: the tuned settings and the SHAP cost budget;
* :mod:`~motex_stream.model.search`: Bayesian search of the hyperparameters by CV;
* :mod:`~motex_stream.model.training`: the paper's training protocol and persistence;
* :mod:`~motex_stream.model.incremental`: the live service's warm-started surrogate.

Nothing is imported here, so reading features does not import xgboost or scikit-optimize.
"""
