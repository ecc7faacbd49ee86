"""Published results on ABID counting (0-5 items, official validation split, 36,032 images).

Shown beside a model's own figures where its data is ABID; meaningless for synthetic bins.
"""

ABID_RESNET34_SCRATCH = {
    "label": "ResNet34 from scratch (abid_challenge)",
    "accuracy": 0.5567,
    "rmse": 0.930,
    "per_class_accuracy": [0.977, 0.834, 0.672, 0.549, 0.426, 0.449],
}
ABID_BEST_PUBLISHED = {"label": "best published (pretrained ResNet34)", "accuracy": 0.567, "rmse": 0.895}
ABID_ORDINAL_LOSS = {"label": "neighbour-label (ordinal-aware) loss", "accuracy": None, "rmse": 0.861}
ABID_ALWAYS_3 = {"label": "always predict 3", "accuracy": 0.248, "rmse": 1.355}
ABID_REFERENCES = (ABID_RESNET34_SCRATCH, ABID_BEST_PUBLISHED, ABID_ORDINAL_LOSS, ABID_ALWAYS_3)
