"""Fine-tuning the shipped CNN on new pictures, in minutes on a CPU (the learning step's training).

    model = keras.saving.load_model("assets/model.keras")
    model, report = fine_tune(model, new_x, new_y, dataset, FineTuneConfig())

The serving model (pixels -> test-time views -> features -> logits -> probabilities) shares its
layers with a plain training model built here (pixels -> the same trunk -> the same logits), so
training one trains the other. Every epoch mixes three kinds of picture:
- the new pictures, each seen `new_repeats` times (a few hundred photos would drown otherwise);
- a replay sample of the training split (with the rotated copies that balance its classes),
  drawn afresh each epoch, which keeps what the CNN knew;
- outliers (pictures of none of our classes, the build's outlier exposure) with the uniform
  distribution as their target and half the weight, so the CNN stays unsure of strangers.
Batch normalisation is frozen (its statistics stay the training split's), as is an airbench net's
whitening layer, and by default every layer before the last block. Batches get the training's
flips and 2-pixel shifts.

What the CNN knew is kept in its features, not only in its answers: on the replayed and outlier
pictures, the squared distance between the features and the champion's features of the same
picture is part of the loss (`feature_distillation`; the champion is a frozen copy). Without it,
on the learning loop's bench material (bench.learning_loop), every setting tried that lifted the
CNN's top-1 on photos by 12 to 16 points also cost 0.5 to 0.6 points of CIFAR-10 accuracy and
0.02 of near-OOD AUROC: the features of Tiny ImageNet pictures of other classes drifted towards
ours. With it at 5: -0.3 points and no AUROC change, for 10 points of photo top-1. Keeping a share
of the weights' move instead (WiSE-FT, Wortsman et al. 2022: the champion's weights and the
fine-tuned ones interpolated) only traded the two along a line.
"""

import time
from dataclasses import dataclass

import numpy as np

from bundle.images import to_float


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 5
    learning_rate: float = 0.01  # the cosine schedule's peak, after a tenth of the steps of warm-up
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    new_repeats: int = 6
    replay_pictures: int = 10000
    # Batch normalisation keeps the statistics and offsets it learnt on the whole training split:
    # batches that mix in a few hundred photos would otherwise pull them towards those.
    freeze_batchnorm: bool = True
    # The layers before this one keep the champion's weights (None, or a net without it: every
    # layer trains). An airbench net's last block and head: 2.5 times faster a step than the whole net,
    # and the earlier layers the OOD detector reads stay as the build fitted them.
    first_trained_layer: str | None = "block3_conv1"
    outliers: int = 3000
    outlier_weight: float = 0.5
    translate: int = 2
    # Weight of the squared distance between the features of replayed and outlier pictures and the
    # champion's features of the same pictures (0: none): what the CNN knew, kept in its features.
    feature_distillation: float = 5.0
    seed: int = 0


def fine_tune(model, new_x, new_y, dataset, config=FineTuneConfig(), verbose=0):
    """Train `model` (the serving Keras model, float32) in place on uint8 pictures new_x with class
    indices new_y, replaying `dataset` (classifier.dataset.Dataset); returns (model, report)."""
    import keras

    rng = np.random.default_rng(config.seed)
    keras.utils.set_random_seed(config.seed)
    classes = len(dataset.class_names)
    training = training_model(model, config.freeze_batchnorm, config.first_trained_layer, bool(config.feature_distillation))
    teacher = None
    if config.feature_distillation:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        teacher = training_model(copy, with_features=True)
    # The training split as the build trained on it: the rotated copies that balance the classes
    # too (from the original pictures alone, the extra classes came half as often and were forgotten).
    training_rows = np.arange(len(dataset.y_train))
    if new_x.ndim == 5:  # (pictures, views, h, w, c): each repeat takes the next view (crops of the upload)
        new_x = np.concatenate([new_x[:, repeat % new_x.shape[1]] for repeat in range(config.new_repeats)])
        new_targets = np.tile(np.eye(classes)[new_y], (config.new_repeats, 1))
    else:
        new_x, new_targets = np.repeat(new_x, config.new_repeats, axis=0), np.eye(classes)[np.repeat(new_y, config.new_repeats)]
    replay_size = min(config.replay_pictures, len(training_rows))
    outlier_size = 0 if dataset.x_outliers is None else min(config.outliers, len(dataset.x_outliers))
    steps = config.epochs * -(-(len(new_x) + replay_size + outlier_size) // config.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(0.0, steps, warmup_steps=max(1, steps // 10),
                                                      warmup_target=config.learning_rate)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
    training.compile(keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay),
                     [loss, "mse"] if teacher is not None else loss,
                     loss_weights=[1.0, config.feature_distillation] if teacher is not None else None)
    started, losses = time.perf_counter(), []
    for _ in range(config.epochs):
        # A fresh replay sample each epoch: more of what the CNN knew, at no extra cost per epoch.
        replay = rng.choice(training_rows, replay_size, replace=False)
        outliers = dataset.x_outliers[rng.choice(len(dataset.x_outliers), outlier_size, replace=False)] if outlier_size \
            else np.zeros((0, *new_x.shape[1:]), np.uint8)
        x = np.concatenate([new_x, dataset.x_train[replay], outliers])
        targets = np.concatenate([new_targets, np.eye(classes)[dataset.y_train[replay]],
                                  np.full((len(outliers), classes), 1 / classes)]).astype(np.float32)
        weights = np.concatenate([np.ones(len(x) - len(outliers)), np.full(len(outliers), config.outlier_weight)]).astype(np.float32)
        order = rng.permutation(len(x))
        x, targets, weights = to_float(augment(x[order], rng, config.translate), 1 / 255), targets[order], weights[order]
        if teacher is not None:
            kept = order >= len(new_x)  # replayed and outlier pictures: the new ones' features are free
            held = np.zeros((len(x), teacher.outputs[1].shape[-1]), np.float32)
            held[kept] = teacher.predict(x[kept], batch_size=1024, verbose=0)[1]
            targets, weights = [targets, held], [weights, kept.astype(np.float32)]
        result = training.fit(x, targets, sample_weight=weights, batch_size=config.batch_size, epochs=1, verbose=verbose)
        losses.append(float(result.history["loss"][-1]))
    return model, {"seconds": time.perf_counter() - started, "loss": losses, "new_pictures": int(len(new_y)),
                   "replay_pictures_per_epoch": int(replay_size), "outliers_per_epoch": int(outlier_size), "steps": int(steps)}


def training_model(model, freeze_batchnorm=True, first_trained_layer=None, with_features=False):
    """pixels -> logits (and features, with_features), one view, sharing the serving model's
    layers. An airbench net's serving model averages test-time views, so its trunk is rebuilt on
    one view (its whitening frozen); another preset's serving model already runs one view up to its
    "logits" layer. Layers before `first_trained_layer` are frozen (a model without a layer of that
    name trains every layer)."""
    import keras

    names = [layer.name for layer in model.layers]
    frozen = set(names[: names.index(first_trained_layer)]) if first_trained_layer in names else set()
    for layer in model.layers:
        if layer.name in frozen or (isinstance(layer, keras.layers.BatchNormalization) and freeze_batchnorm):
            layer.trainable = False
    if "whiten" not in names:
        inputs, features, logits = model.inputs[0], model.get_layer("features").output, model.get_layer("logits").output
    else:
        model.get_layer("whiten").trainable = False
        inputs = keras.Input(model.inputs[0].shape[1:])
        x = inputs
        for layer in model.layers[names.index("normalize"): names.index("pooled") + 1]:
            x = layer(x)
        features = model.get_layer("features")(x)
        logits = model.get_layer("logits")(features)
    return keras.Model(inputs, [logits, features] if with_features else logits, name="fine_tune")


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
