"""Action recognition (--task recognition): step.py (ClassificationStep: cross-entropy of the global batch over
the class texts), evaluation.py (every video scored against every class), metrics.py (top-1, top-5, mean class
accuracy, confusion), report.py (the confusion-matrix PNG and per-class JSON)."""
