"""Model presets, all plain keras.Sequential and backend-neutral (they train under JAX on a GPU and
serve under TensorFlow here).

Every preset takes [0, 1] pixels and names three layers that the rest of the product reads:
"features" (the penultimate layer: OOD detector, gallery), "logits" and "probabilities".

    model = build_model("fastnet", input_shape=(32, 32, 3), num_classes=13)
"""

import keras
from keras import layers, regularizers

# Channel statistics of CIFAR-10 training pixels in [0, 1]; close enough for any natural photos.
RGB_MEAN = (0.4914, 0.4822, 0.4465)
RGB_STD = (0.2470, 0.2435, 0.2616)


def _normalize(channels):
    mean = RGB_MEAN if channels == 3 else (0.45,)
    std = RGB_STD if channels == 3 else (0.25,)
    return layers.Normalization(mean=mean, variance=[s * s for s in std], name="normalize")


def _head(num_classes):
    return [
        layers.Dense(num_classes, name="logits"),
        layers.Activation("softmax", name="probabilities"),
    ]


def bootcamp(input_shape, num_classes):
    """The bootcamp slides' CNN: two Conv-ReLU-BN blocks and a Dense(512) with L2."""
    def block(width, name):
        return [
            layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv1"),
            layers.BatchNormalization(name=f"{name}_bn1"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_conv2"),
            layers.BatchNormalization(name=f"{name}_bn2"),
            layers.MaxPooling2D(name=f"{name}_pool"),
            layers.Dropout(0.25, name=f"{name}_dropout"),
        ]
    return keras.Sequential(
        [keras.Input(input_shape), _normalize(input_shape[-1])]
        + block(32, "block1") + block(64, "block2")
        + [
            layers.Flatten(),
            layers.Dense(512, activation="relu", kernel_regularizer=regularizers.l2(1e-4), name="features"),
            layers.Dropout(0.5),
        ]
        + _head(num_classes),
        name="bootcamp",
    )


def gradio_slides(input_shape, num_classes):
    """The CIFAR-10/Gradio slides' CNN: augmentation layers, then three conv blocks."""
    stack = [keras.Input(input_shape), layers.RandomFlip("horizontal"), layers.RandomTranslation(0.1, 0.1)]
    stack.append(_normalize(input_shape[-1]))
    for index, width in enumerate((32, 64, 128), start=1):
        stack += [
            layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{index}_conv1"),
            layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{index}_conv2"),
            layers.MaxPooling2D(name=f"block{index}_pool"),
        ]
    stack += [layers.Flatten(), layers.Dropout(0.3), layers.Dense(128, activation="relu", name="features")]
    return keras.Sequential(stack + _head(num_classes), name="gradio_slides")


def pets_small(input_shape, num_classes):
    """The pets slides' small CNN (Rescaling to [-1, 1], three conv-pool pairs)."""
    stack = [keras.Input(input_shape), layers.Rescaling(2.0, offset=-1.0)]
    for width in (16, 32, 64):
        stack += [layers.Conv2D(width, 3, padding="same", activation="relu"), layers.MaxPooling2D()]
    stack += [layers.Flatten(), layers.Dense(128, activation="relu", name="features")]
    return keras.Sequential(stack + _head(num_classes), name="pets_small")


def fastnet(input_shape, num_classes, widths=(64, 256, 256)):
    """Our own fast net, after airbench94: a 2x2 stem, then three (conv, pool, BN, GELU, conv,
    BN, GELU) blocks and a global max-pool. Few layers, wide, high learning rate."""
    stack = [
        keras.Input(input_shape),
        layers.RandomFlip("horizontal"),
        layers.RandomTranslation(2 / input_shape[0], 2 / input_shape[1], fill_mode="reflect"),
        _normalize(input_shape[-1]),
        layers.Conv2D(24, 2, use_bias=False, name="stem"),
        layers.Activation("gelu"),
    ]
    for index, width in enumerate(widths, start=1):
        stack += [
            layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{index}_conv1"),
            layers.MaxPooling2D(name=f"block{index}_pool"),
            # Keras momentum 0.6 is PyTorch's 0.4, as airbench uses: statistics that keep up
            # with a fast-moving network.
            layers.BatchNormalization(momentum=0.6, name=f"block{index}_bn1"),
            layers.Activation("gelu"),
            layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{index}_conv2"),
            layers.BatchNormalization(momentum=0.6, name=f"block{index}_bn2"),
            layers.Activation("gelu"),
        ]
    stack.append(layers.GlobalMaxPooling2D(name="features"))
    return keras.Sequential(stack + _head(num_classes), name="fastnet")


def fastnet_small(input_shape, num_classes):
    """fastnet at a quarter of the multiply-adds, for CPU-only builds."""
    return fastnet(input_shape, num_classes, widths=(48, 160, 160))


PRESETS = {
    "bootcamp": bootcamp,
    "gradio_slides": gradio_slides,
    "pets_small": pets_small,
    "fastnet": fastnet,
    "fastnet_small": fastnet_small,
}


def build_model(preset, input_shape, num_classes):
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
    return PRESETS[preset](tuple(input_shape), num_classes)
