"""Our 13 classes: CIFAR-10's 10 plus 3 CIFAR-100 superclasses rebuilt from Tiny ImageNet."""

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# CIFAR-100 cannot be had offline, so each superclass is rebuilt from the Tiny ImageNet
# synsets that fall inside it (../shared/data/README.md lists them).
EXTRA_CLASS_WNIDS = {
    "fruit_and_vegetables": ("n07747607", "n07734744", "n07720875", "n07749582", "n07753592", "n07768694"),
    "insects": ("n02206856", "n02165456", "n02279972", "n02281406", "n02233338"),
    "large_omnivores_and_herbivores": ("n02403003", "n02410509", "n02437312", "n02481823", "n02504458"),
}

CLASS_NAMES = CIFAR10_CLASSES + tuple(EXTRA_CLASS_WNIDS)

# The CIFAR-100 coarse (superclass) label names, in the order of cifar-100-python's meta file.
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)

# The CIFAR-100 fine label names, in the order of cifar-100-python's meta file.
CIFAR100_FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
