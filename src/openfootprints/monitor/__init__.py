"""Monitoring what a model sees: a reference profile of its validation data, kept in the bundle, and the drift of
each detection's imagery and outputs from it (:mod:`openfootprints.monitor.drift`)."""
