"""airbench's hyperparameters, in one place and without Keras, so that configs can be made,
hashed and saved without loading a framework (classifier.airbench trains with them).

Units are the paper's: learning rate and weight decay per 1024 examples, decoupled from momentum
and from each other; classifier.airbench's docstring says how they become Keras' per-step values.
"""

from dataclasses import dataclass

# The nets of the airbench family: widths of the three blocks.
WIDTHS = {"airbench94": (64, 256, 256), "airbench95": (128, 384, 384)}
# The weights of the test-time views at each tta_level (classifier.airbench.test_time_views): the
# picture and its mirror image, then (level 2) both shifted by a pixel up-left and down-right.
VIEW_WEIGHTS = ((1.0,), (0.5, 0.5), (0.25, 0.25, 0.125, 0.125, 0.125, 0.125))


@dataclass(frozen=True)
class AirbenchConfig:
    batch_size: int = 1024
    learning_rate: float = 11.5  # per 1024 examples, decoupled from momentum (the paper's unit)
    momentum: float = 0.85  # Nesterov
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the learning rate
    bias_scaler: float = 64.0  # BatchNorm biases learn this much faster (not decayed faster)
    label_smoothing: float = 0.2
    warmup_fraction: float = 0.23  # triangular schedule: up over this share of the steps...
    schedule_start: float = 0.2  # ...from this multiple of the learning rate, to 1, then down
    schedule_end: float = 0.07  # ...to this multiple at the last step
    whiten_kernel_size: int = 2
    whiten_images: int = 5000  # training pictures whose patches give the whitening
    whiten_eps: float = 5e-4
    whiten_bias_epochs: int = 3  # the whitening bias trains this long, then is frozen
    batchnorm_momentum: float = 0.6  # Keras' momentum: PyTorch's 0.4
    logit_scale: float = 1 / 9
    lookahead_start_epochs: int = 3
    lookahead_every_steps: int = 5
    lookahead_decay_base: float = 0.95  # per step; raised to the power every_steps
    lookahead_decay_power: float = 3.0
    flip: bool = True  # derandomised, alternating
    translate: int = 2  # pixels, reflect padding
    tta_level: int = 2  # 0: none, 1: mirror, 2: mirror x {no shift, two 1-pixel shifts}
    precision: str = "mixed_bfloat16"  # keras dtype policy while training (the build serves float32)
    # Outlier exposure (Hendrycks et al., ICLR 2019): each batch also carries this many pictures of
    # none of our classes (Dataset.x_outliers), whose target is the uniform distribution; their
    # mean cross-entropy is added with the paper's weight. 0 or no outliers: the plain recipe.
    outlier_batch_size: int = 256
    outlier_weight: float = 0.5
    # Switches for the ablation (research.ablation): each False removes one trick of the recipe.
    whiten: bool = True  # False: the first convolution trains from random init like the others
    dirac: bool = True  # False: the other convolutions keep PyTorch's random init
    lookahead: bool = True
