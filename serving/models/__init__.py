"""The served models, one module each, named as Triton names the model (see ``serving.catalog``)."""
