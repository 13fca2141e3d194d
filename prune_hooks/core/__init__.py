"""The framework-free core, by the stages a run goes through: ``data`` (read annotations and runs) ->
``scoring`` (capture and score) -> ``selection`` -> ``outputs`` (run directory, report, retraining, cleaning);
``lifecycle`` drives them for the framework hooks. Each stage imports only the stages before it.
"""
