"""The experiment and stack file formats: typed models and the loader that builds them."""
