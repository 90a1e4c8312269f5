"""The floor for the serving benchmark: a Seldon model that returns its input untouched."""


class TrivialModel:
    def predict(self, X, feature_names, meta=None):
        return X
