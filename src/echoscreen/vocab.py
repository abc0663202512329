"""The project's label vocabularies: echo view codes and RHD study labels.

One definition for every package (the phantom writes them, ingest validates clips.csv
and labels.csv against them, the catalog stores them, the models order their logits by
them, evaluation reads predictions by them). Plain tuples with no dependencies, so that
importing them loads neither torch nor the catalog.
"""

from __future__ import annotations

#: view codes, in the order of the view classifier's logits (the phantom's codes)
VIEWS: tuple[str, ...] = ("plax", "rvin", "psax_av", "psax_mv", "a4c", "a5c", "other")
#: three-class RHD labels (WHF 2012 style); screen-positive means label != "normal"
LABELS: tuple[str, ...] = ("normal", "borderline", "definite")
#: views whose clips carry RHD evidence (mitral and aortic valves)
RHD_VIEWS: tuple[str, ...] = ("plax", "psax_av", "psax_mv", "a4c", "a5c")
