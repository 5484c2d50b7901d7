"""Scoring stylised outputs: how close each method comes to Gatys on held-out content/style pairs.

* ``scores``: pixel scores of an output against its photo (structure, face, tonal layout, colour);
* ``scorer``: VGG19 feature losses against the photo and the style image (content, style, style
  inside the margin, style with the margin repainted, Gram), and every score of one output;
* ``methods``: the methods compared (the photo itself, a network, AdaIN, the Gatys@N reference,
  premium), each run on one pair;
* ``summary``: per-method means over the pairs, ratios to the reference and the acceptance targets.

``tools/evaluate.py`` is the command over these: it picks the held-out pairs, runs and scores
every method on them and writes ``evaluate.json``, the outputs and contact sheets.
"""
