"""Fine-tuning the shipped CNN on new pictures, in minutes on a CPU (the learning step's training).

    model = keras.saving.load_model("assets/model.keras")
    model, report = fine_tune(model, new_x, new_y, dataset, FineTuneConfig())

The serving model (pixels -> test-time views -> features -> logits -> probabilities) shares its
layers with a plain training model built here (pixels -> the same trunk -> the same logits), so
training one trains the other. Every epoch mixes three kinds of picture:
- the new pictures, each seen `new_repeats` times (a few hundred photos would drown otherwise);
- a fixed replay sample of the original training split, whose targets blend the label with the
  shipped model's own probabilities (learning without forgetting: Li and Hoiem 2016), which keeps
  what the CNN knew of CIFAR-10;
- outliers (pictures of none of our classes, the build's outlier exposure) with the uniform
  distribution as their target and half the weight, so the CNN stays unsure of strangers.
An airbench net's frozen whitening layer stays frozen. Batches get the training's flips and 2-pixel shifts.
"""

import time
from dataclasses import dataclass

import numpy as np

from bundle.images import to_float


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 6
    learning_rate: float = 0.005  # the cosine schedule's peak, after a tenth of the steps of warm-up
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    new_repeats: int = 3
    replay_pictures: int = 8000
    # Share of a replay picture's target taken from the shipped model's probabilities.
    distillation: float = 0.5
    outliers: int = 2000
    outlier_weight: float = 0.5
    translate: int = 2
    seed: int = 0


def fine_tune(model, new_x, new_y, dataset, config=FineTuneConfig(), verbose=0):
    """Train `model` (the serving Keras model, float32) in place on uint8 pictures new_x with class
    indices new_y, replaying `dataset` (classifier.dataset.Dataset); returns (model, report)."""
    import keras

    rng = np.random.default_rng(config.seed)
    keras.utils.set_random_seed(config.seed)
    classes = len(dataset.class_names)
    training = training_model(model)
    original = np.flatnonzero(~np.asarray(dataset.train_augmented, bool)) if dataset.train_augmented is not None \
        else np.arange(len(dataset.y_train))
    replay = rng.choice(original, min(config.replay_pictures, len(original)), replace=False)
    replay_x, replay_y = dataset.x_train[replay], dataset.y_train[replay]
    shipped = model.predict(to_float(replay_x, 1 / 255), batch_size=512, verbose=0)
    replay_targets = (1 - config.distillation) * np.eye(classes)[replay_y] + config.distillation * shipped
    outliers = np.zeros((0, *dataset.x_train.shape[1:]), np.uint8)
    if dataset.x_outliers is not None and config.outliers:
        outliers = dataset.x_outliers[rng.choice(len(dataset.x_outliers), min(config.outliers, len(dataset.x_outliers)), replace=False)]
    x = np.concatenate([np.repeat(new_x, config.new_repeats, axis=0), replay_x, outliers])
    targets = np.concatenate([np.eye(classes)[np.repeat(new_y, config.new_repeats)], replay_targets,
                              np.full((len(outliers), classes), 1 / classes)]).astype(np.float32)
    weights = np.concatenate([np.ones(len(x) - len(outliers)), np.full(len(outliers), config.outlier_weight)]).astype(np.float32)
    steps = config.epochs * -(-len(x) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_steps=max(1, steps // 10),
                                                      warmup_target=config.learning_rate)
    training.compile(keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay),
                     keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing))
    started, losses = time.perf_counter(), []
    for _ in range(config.epochs):
        order = rng.permutation(len(x))
        result = training.fit(to_float(augment(x[order], rng, config.translate), 1 / 255), targets[order],
                              sample_weight=weights[order], batch_size=config.batch_size, epochs=1, verbose=verbose)
        losses.append(float(result.history["loss"][-1]))
    return model, {"seconds": time.perf_counter() - started, "loss": losses, "new_pictures": int(len(new_x)),
                   "replay_pictures": int(len(replay_x)), "outliers": int(len(outliers)), "steps": int(steps)}


def training_model(model):
    """pixels -> logits, one view, sharing the serving model's layers. An airbench net's serving
    model averages test-time views, so its trunk is rebuilt on one view (its whitening frozen);
    another preset's serving model already runs one view up to its "logits" layer."""
    import keras

    names = [layer.name for layer in model.layers]
    if "whiten" not in names:
        return keras.Model(model.inputs[0], model.get_layer("logits").output, name="fine_tune")
    model.get_layer("whiten").trainable = False
    inputs = keras.Input(model.inputs[0].shape[1:])
    x = inputs
    for layer in model.layers[names.index("normalize"): names.index("pooled") + 1]:
        x = layer(x)
    return keras.Model(inputs, model.get_layer("logits")(model.get_layer("features")(x)), name="fine_tune")


def augment(x, rng, translate):
    """Mirror half the pictures and shift each by up to `translate` pixels (reflected edges)."""
    mirrored = rng.random(len(x)) < 0.5
    x = np.where(mirrored[:, None, None, None], x[:, :, ::-1], x)
    if not translate:
        return x
    padded = np.pad(x, ((0, 0), (translate, translate), (translate, translate), (0, 0)), mode="reflect")
    shifts = rng.integers(0, 2 * translate + 1, (len(x), 2))
    out = np.empty_like(x)
    for row, column in np.unique(shifts, axis=0):
        chosen = np.flatnonzero((shifts[:, 0] == row) & (shifts[:, 1] == column))
        out[chosen] = padded[chosen, row:row + x.shape[1], column:column + x.shape[2]]
    return out
