"""airbench94's training recipe (Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024),
written here in backend-neutral Keras: one file, hyperparameters in one place.

    model, history = fit(AirbenchConfig(), dataset, epochs=12, out_dir="runs/airbench94-...")

The paper's recipe, and what each part is here:
- the net: a 2x2 first convolution, then three (conv, max-pool, BN, GELU, conv, BN, GELU) blocks
  of widths 64/256/256 and a global max-pool; BatchNorm without a trainable scale (eps 1e-12,
  momentum 0.6 in Keras' sense, PyTorch's 0.4); the other convolutions start as identities
  (Dirac), the classifier has no bias and its logits are scaled by 1/9;
- the first convolution is frozen patch whitening: eigenvectors of the 2x2 patch covariance of
  5,000 training pictures, scaled by 1/sqrt(eigenvalue + 5e-4), concatenated with their negation;
  only its bias trains, for the first 3 epochs;
- Nesterov SGD in PyTorch's form (weight decay added to the gradient, inside the momentum), batch
  1024, BatchNorm biases at 64x the learning rate; the triangular schedule (0.2x -> 1x over the
  first 23% of steps, then down to 0.07x); label smoothing 0.2;
- lookahead: from epoch 3, every 5 steps the weights move to an exponential moving average of
  themselves with decay 0.95^5 * (step / total steps)^3, and are copied back at each epoch's end;
- derandomised flips: each picture is flipped at random once, then every other epoch all are,
  so it is seen both ways in turn; random translations by up to 2 pixels (reflect padding);
- outlier exposure (Hendrycks et al. 2019, not in airbench): pictures of none of our classes ride
  along in every batch with a uniform target, weighted 0.5 (AlternatingFlipLoader);
- test-time augmentation inside the saved model: six views (mirror x {no shift, a 1-pixel shift
  up-left, a 1-pixel shift down-right}), weighted as the paper does (1/4 each for the two unshifted
  views, 1/8 each for the four shifted), so that model.keras itself answers with it and its
  "features" layer is the weighted average of the views' features.

Units. The paper states lr and weight decay per 1024 examples, "decoupled" from momentum, and
sums the loss over the batch. PyTorch's SGD then gets lr / S and wd * batch / S per step, with
S = 1024 * (1 + 1 / (1 - momentum)) = 7,851. Keras averages the loss over the batch, so the
gradient here is the summed one divided by the batch size B; the same steps need a learning rate
B times larger: 11.5 / S * 1024 = 1.50 (96.0 for BatchNorm biases), and the weight decay added to
the gradient B times smaller, which makes the decay of each step (learning rate x weight-decay
coefficient) 0.0153 * 1024 / S = 0.00200 of each weight at the schedule's peak, for every weight,
biases included (the paper divides their coefficient by the same 64 that multiplies their rate).

On this 2-core CPU (no GPU lent) training runs in mixed bfloat16 (the CPU has AMX: a step takes
2.5 s against 4.0 s in float32); BatchNorm and the variables stay float32.
"""

import keras
import numpy as np
from keras import layers, ops

from classifier.airbench_config import VIEW_WEIGHTS, WIDTHS, AirbenchConfig  # noqa: F401  (hyperparameters, without Keras)
from classifier.devices import device_count
from bundle.images import to_float
from classifier.models import RGB_MEAN, RGB_STD


def fit(config, dataset, epochs, out_dir, preset="airbench94", seed=0, verbose="auto"):
    """Train on `dataset` (classifier.dataset.Dataset); returns (serving model with the test-time
    views, history dict). `out_dir` receives history.csv."""
    keras.utils.set_random_seed(seed)
    num_classes = len(dataset.class_names)
    outliers = dataset.x_outliers if config.outlier_weight and dataset.x_outliers is not None else None
    train = AlternatingFlipLoader(dataset.x_train, dataset.y_train, num_classes, config.batch_size,
                                  config.flip, config.translate, seed, outliers, config.outlier_batch_size, config.outlier_weight)
    steps_per_epoch, total_steps = len(train), len(train) * int(epochs)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        trunk, head, model = make_net(dataset.x_train.shape[1:], num_classes, WIDTHS[preset], config)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    whiten = model.get_layer("whiten")
    if config.whiten:
        whiten.kernel.assign(whitening_kernel(dataset.x_train[: config.whiten_images], config))
        whiten.kernel.trainable = False

    bias_paths = [v.path for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
                  for v in layer.trainable_weights]
    optimizer = AirbenchSGD(
        learning_rate=TriangleSchedule(peak_rate(config), total_steps, config),
        momentum=config.momentum,
        decay_per_step=config.weight_decay * config.batch_size / kilostep_scale(config),
        multipliers={path: config.bias_scaler for path in bias_paths},
        frozen_after={whiten.bias.path: config.whiten_bias_epochs * steps_per_epoch},
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    # Data parallel (classifier.devices) splits every batch evenly: validation keeps a multiple
    # of the device count (dropping at most count - 1 of its pictures) and batches like training.
    keep = len(dataset.x_val) - len(dataset.x_val) % device_count()
    x_val = to_float(dataset.x_val[:keep])
    y_val = np.eye(num_classes, dtype=np.float32)[dataset.y_val[:keep]]
    callbacks = [keras.callbacks.TerminateOnNaN()] + ([Lookahead(total_steps, config)] if config.lookahead else [])
    if out_dir is not None:
        callbacks.append(keras.callbacks.CSVLogger(f"{out_dir}/history.csv"))
    result = model.fit(train, validation_data=(x_val, y_val), validation_batch_size=_validation_batch(len(x_val), config.batch_size),
                       epochs=int(epochs), callbacks=callbacks, verbose=verbose)
    history = {name: [float(v) for v in values] for name, values in result.history.items()}
    keras.config.set_dtype_policy(config.precision)
    try:
        serving = serving_model(trunk, head, dataset.x_train.shape[1:], num_classes, config, preset)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return serving, history


def _validation_batch(count, batch_size):
    """The largest batch up to `batch_size` that splits `count` validation pictures into equal
    batches divisible by the device count (no ragged last batch for data parallel)."""
    devices = device_count()
    if devices == 1:
        return batch_size
    size = batch_size - batch_size % devices
    while size > devices and count % size:
        size -= devices
    return max(size, devices)


# ---------------------------------------------------------------- the net


def make_net(input_shape, num_classes, widths, config):
    """(trunk layers from pixels to pooled features, the bias-free classifier, training model
    from [0, 1] pixels to scaled logits)."""
    # PyTorch's default initialisation (uniform, +-1/sqrt(fan_in)), which the recipe was tuned with.
    torch_like = keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")
    channels = input_shape[-1]
    trunk = [
        layers.Normalization(mean=RGB_MEAN[:channels] if channels == 3 else (0.45,),
                             variance=[s * s for s in (RGB_STD if channels == 3 else (0.25,))], name="normalize"),
        layers.Conv2D(2 * channels * config.whiten_kernel_size ** 2, config.whiten_kernel_size, name="whiten"),
        layers.Activation("gelu", name="whiten_gelu"),
    ]
    for index, width in enumerate(widths, start=1):
        norm = dict(momentum=config.batchnorm_momentum, epsilon=1e-12, scale=False)
        conv = dict(kernel_size=3, padding="same", use_bias=False, kernel_initializer=torch_like)
        trunk += [
            layers.Conv2D(width, name=f"block{index}_conv1", **conv),
            layers.MaxPooling2D(name=f"block{index}_pool"),
            layers.BatchNormalization(name=f"block{index}_bn1", **norm),
            layers.Activation("gelu", name=f"block{index}_gelu1"),
            layers.Conv2D(width, name=f"block{index}_conv2", **conv),
            layers.BatchNormalization(name=f"block{index}_bn2", **norm),
            layers.Activation("gelu", name=f"block{index}_gelu2"),
        ]
    trunk.append(layers.GlobalMaxPooling2D(name="pooled"))
    head = layers.Dense(num_classes, use_bias=False, kernel_initializer=torch_like, name="classifier")
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in trunk:
        x = layer(x)
    logits = layers.Rescaling(config.logit_scale, name="scaled_logits", dtype="float32")(head(x))
    model = keras.Model(inputs, logits, name="airbench_training")
    for layer in trunk:
        if config.dirac and isinstance(layer, layers.Conv2D) and layer.name != "whiten":
            layer.kernel.assign(dirac(layer.kernel.numpy()))
    return trunk, head, model


def dirac(kernel):
    """A (h, w, in, out) kernel whose first `in` filters pass their input channel through
    unchanged (an implicit residual at the start); the other filters keep their values."""
    kernel = kernel.copy()
    height, width, inputs, outputs = kernel.shape
    count = min(inputs, outputs)
    kernel[:, :, :, :count] = 0.0
    kernel[height // 2, width // 2, np.arange(count), np.arange(count)] = 1.0
    return kernel


def whitening_kernel(images, config):
    """The frozen first convolution: (k, k, channels, 2 * k * k * channels), from uint8 pictures."""
    k = config.whiten_kernel_size
    x = (images.astype(np.float64) / 255.0 - np.array(RGB_MEAN[: images.shape[-1]])) / np.array(RGB_STD[: images.shape[-1]])
    covariance, count = 0.0, 0
    for start in range(0, len(x), 500):
        windows = np.lib.stride_tricks.sliding_window_view(x[start:start + 500], (k, k), axis=(1, 2))
        # (n, h', w', channels, k, k) -> rows in the kernel's (row, column, channel) order
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])
        covariance = covariance + patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / count)
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]  # largest first
    filters = eigenvectors / np.sqrt(eigenvalues + config.whiten_eps)
    kernel = np.concatenate([filters, -filters], axis=1)
    return kernel.reshape(k, k, x.shape[-1], -1).astype(np.float32)


def serving_model(trunk, head, input_shape, num_classes, config, name):
    """[0, 1] pixels -> probabilities, through the test-time views; layers "features" (weighted
    mean of the views' pooled features), "logits" (the classifier with the 1/9 folded in, and a
    zero bias) and "probabilities", as every preset names them."""
    inputs = keras.Input(input_shape, name="pixels")
    views, weights = test_time_views(inputs, config.tta_level)
    x = ops.concatenate(views, axis=0) if len(views) > 1 else views[0]
    for layer in trunk:
        x = layer(x)
    if len(views) > 1:
        # One batch of all views (a batch of six costs far less than six batches of one), then
        # back to one row per picture.
        x = ops.reshape(x, (len(views), -1, x.shape[-1]))
        x = sum(weight * x[index] for index, weight in enumerate(weights))
    features = layers.Identity(name="features")(x)
    logits = layers.Dense(num_classes, name="logits")(features)
    probabilities = layers.Activation("softmax", name="probabilities", dtype="float32")(logits)
    model = keras.Model(inputs, probabilities, name=name)
    kernel = np.asarray(head.kernel.numpy(), np.float32) * np.float32(config.logit_scale)
    model.get_layer("logits").set_weights([kernel, np.zeros(num_classes, np.float32)])
    return model


def test_time_views(inputs, level):
    """The views of a batch and their weights: the picture, its mirror image, and (level 2) both
    shifted by one pixel up-left and down-right with reflected edges."""
    if level == 0:
        return [inputs], list(VIEW_WEIGHTS[0])
    mirrored = [inputs, ops.flip(inputs, axis=2)]
    if level == 1:
        return mirrored, list(VIEW_WEIGHTS[1])
    height, width = inputs.shape[1], inputs.shape[2]
    padded = ops.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="reflect")
    up_left, down_right = padded[:, :height, :width, :], padded[:, 2:, 2:, :]
    shifted = [up_left, ops.flip(up_left, axis=2), down_right, ops.flip(down_right, axis=2)]
    return mirrored + shifted, list(VIEW_WEIGHTS[2])


# ---------------------------------------------------------------- optimizer, schedule, lookahead


def kilostep_scale(config):
    """How much larger Nesterov steps are than the gradients, per 1024 examples (the paper's S)."""
    return 1024 * (1 + 1 / (1 - config.momentum))


def peak_rate(config):
    """The learning rate of the schedule's peak, for Keras' batch-averaged loss (see the docstring)."""
    return config.learning_rate / kilostep_scale(config) * config.batch_size


class AirbenchSGD(keras.optimizers.Optimizer):
    """Nesterov SGD as PyTorch computes it, weight decay added to the gradient:
        d = g + l2 * w;  buffer = momentum * buffer + d;  w -= rate * (d + momentum * buffer)
    with a rate multiplier per variable (BatchNorm biases) and variables that stop moving
    after a number of steps (the whitening bias). l2 is chosen per variable so that every
    weight decays by `decay_per_step` at the schedule's peak."""

    def __init__(self, learning_rate, momentum, decay_per_step, multipliers, frozen_after, name="airbench_sgd"):
        super().__init__(learning_rate=learning_rate, name=name)
        self.momentum = momentum
        self.decay_per_step = decay_per_step
        self.multipliers = dict(multipliers)
        self.frozen_after = dict(frozen_after)
        self.peak = float(learning_rate.peak)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.buffers = [self.add_variable_from_reference(v, "momentum") for v in variables]
        # By position: the TensorFlow backend hands update_step its own variables, without paths.
        self.variable_multipliers = [self.multipliers.get(v.path, 1.0) for v in variables]
        self.variable_frozen_after = [self.frozen_after.get(v.path) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        multiplier = self.variable_multipliers[index]
        rate = ops.cast(learning_rate, variable.dtype) * multiplier
        d = ops.cast(gradient, variable.dtype) + (self.decay_per_step / (self.peak * multiplier)) * variable
        buffer = self.buffers[index]
        self.assign(buffer, self.momentum * buffer + d)
        step = d + self.momentum * buffer
        if self.variable_frozen_after[index] is not None:
            step = step * ops.cast(ops.less(self.iterations, self.variable_frozen_after[index]), variable.dtype)
        self.assign_sub(variable, rate * step)


class TriangleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear from start x peak up to the peak at warmup_fraction of the steps, then linear
    down to end x peak at the last step."""

    def __init__(self, peak, total_steps, config):
        self.peak, self.total_steps = peak, total_steps
        self.warmup = max(1, int(total_steps * config.warmup_fraction))
        self.start, self.end = config.schedule_start, config.schedule_end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        up = self.start + (1.0 - self.start) * step / self.warmup
        down = 1.0 + (self.end - 1.0) * (step - self.warmup) / max(1, self.total_steps - self.warmup)
        return self.peak * ops.where(step < self.warmup, up, down)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


class Lookahead(keras.callbacks.Callback):
    """Every few steps from start_epochs on: average = lerp(average, weights, 1 - decay) and
    the weights become the average; at each epoch's end the weights become the average."""

    def __init__(self, total_steps, config):
        super().__init__()
        self.total_steps, self.config = total_steps, config
        self.average, self.epoch = None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        c = self.config
        step = int(ops.convert_to_numpy(self.model.optimizer.iterations))
        if self.epoch < c.lookahead_start_epochs or step % c.lookahead_every_steps:
            return
        weights = [v for v in self.model.weights if "float" in str(v.dtype)]
        if self.average is None:
            self.average = [ops.convert_to_numpy(v) for v in weights]
            return
        decay = c.lookahead_decay_base ** c.lookahead_every_steps * (step / self.total_steps) ** c.lookahead_decay_power
        for index, variable in enumerate(weights):
            self.average[index] += (1.0 - decay) * (ops.convert_to_numpy(variable) - self.average[index])
            variable.assign(self.average[index])

    def on_epoch_end(self, epoch, logs=None):
        if self.average is not None:
            weights = [v for v in self.model.weights if "float" in str(v.dtype)]
            for variable, value in zip(weights, self.average):
                variable.assign(value)


# ---------------------------------------------------------------- data


class AlternatingFlipLoader(keras.utils.PyDataset):
    """Batches of [0, 1] pixels and one-hot targets: shuffled each epoch, the last partial batch
    dropped; each picture flipped at random once, then all of them every other epoch; shifted by
    up to `translate` pixels with reflected edges, afresh each epoch.

    With `outliers` (outlier exposure), each batch also carries `outlier_batch` of them, drawn in
    turn from a shuffled cycle, randomly flipped and shifted, with the uniform distribution as
    their target, and sample weights that make Keras' batch mean the in-distribution mean plus
    `outlier_weight` times the outliers' mean (label smoothing leaves a uniform target uniform).
    The training "accuracy" then counts the outliers as misses; validation has none."""

    def __init__(self, images, labels, num_classes, batch_size, flip, translate, seed,
                 outliers=None, outlier_batch=0, outlier_weight=0.0):
        super().__init__()
        self.images, self.batch_size, self.flip, self.translate = images, batch_size, flip, translate
        self.rng = np.random.default_rng(seed)
        self.flipped = self.rng.random(len(self.images)) < 0.5 if self.flip else np.zeros(len(self.images), bool)
        self.targets = np.eye(num_classes, dtype=np.float32)[labels]
        self.outliers = outliers if outliers is not None and len(outliers) and outlier_batch else None
        if self.outliers is not None:
            self.outlier_batch = min(outlier_batch, len(self.outliers))
            total = batch_size + self.outlier_batch
            self.weights = np.concatenate([np.full(batch_size, total / batch_size, np.float32),
                                           np.full(self.outlier_batch, outlier_weight * total / self.outlier_batch, np.float32)])
            self.outlier_target = np.full((self.outlier_batch, num_classes), 1.0 / num_classes, np.float32)
            # Every batch's outliers fixed per epoch, from the seed alone: a batch can be asked twice.
            self.outlier_rng = np.random.default_rng([seed, 1])
        self.epoch = 0
        self._draw()

    def __len__(self):
        return len(self.images) // self.batch_size

    def _draw(self):
        self.order = self.rng.permutation(len(self.images))
        self.shifts = self.rng.integers(-self.translate, self.translate + 1, (len(self.images), 2))
        if self.outliers is not None:
            draws = len(self) * self.outlier_batch
            cycles = -(-draws // len(self.outliers))
            self.outlier_order = np.concatenate([self.outlier_rng.permutation(len(self.outliers)) for _ in range(cycles)])[:draws]
            self.outlier_shifts = self.outlier_rng.integers(-self.translate, self.translate + 1, (draws, 2))
            self.outlier_mirror = self.outlier_rng.random(draws) < 0.5

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self._augmented(self.images[rows], self.shifts[rows],
                            self.flipped[rows] ^ bool(self.epoch % 2) if self.flip else np.zeros(len(rows), bool))
        if self.outliers is None:
            return to_float(x), self.targets[rows]
        draws = slice(index * self.outlier_batch, (index + 1) * self.outlier_batch)
        mirror = self.outlier_mirror[draws] if self.flip else np.zeros(self.outlier_batch, bool)
        outliers = self._augmented(self.outliers[self.outlier_order[draws]], self.outlier_shifts[draws], mirror)
        return (to_float(np.concatenate([x, outliers])), np.concatenate([self.targets[rows], self.outlier_target]),
                self.weights)

    def _augmented(self, x, shifts, mirror):
        if self.translate:
            x = shift(x, shifts, self.translate)
        return np.where(mirror[:, None, None, None], x[:, :, ::-1, :], x)

    def on_epoch_end(self):
        self.epoch += 1
        self._draw()


def shift(images, shifts, pad):
    """Each picture moved by its (rows, columns) shift, edges reflected."""
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    out = np.empty_like(images)
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            rows = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            if rows.any():
                out[rows] = padded[rows, pad + dy:pad + dy + height, pad + dx:pad + dx + width]
    return out
