"""The harder synthetic testbed: busier scenes, only compositional captions, distractors.

  bash train.sh hard --config=configs/shapes_hard.py

Scenes hold 3 to 5 objects and every caption binds attributes or relates objects
("a red circle and a blue square", "a small red circle left of a blue square",
whole-scene counts), so no caption is true of dozens of test images as "a red
circle" is: far fewer paired positives hide among true ones, and a model must get
bindings, relations and counts right. Each caption also has a distractor one word
away that is false of its image (hard negatives by construction); the evaluation
reports distractor/accuracy, how often the true caption scores above it. Same model
and steps as configs/default.py, so it trains in minutes on a laptop as well.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.data.synthetic.update(dict(min_objects=3, max_objects=5, caption_levels=("pair", "relation", "scene"),
                               distractors=True))
  return c
