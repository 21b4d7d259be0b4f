"""Which of our 13 classes each ImageNet-1k class belongs to, derived from the WordNet hierarchy.

    label_map = build_label_map(data_dir / "wordnet")     # {imagenet index: our class index, or None}
    save_label_map("bundle/fallback", label_map, data_dir / "wordnet")
    label_map = fallback.label_map.load_label_map("bundle/fallback")   # the server's side

An ImageNet class maps to our class when its synset lies under one of that class's root synsets
(ROOT_SYNSETS), unless OVERRIDES says otherwise. None means "none of ours": the fallback's
probability on it counts for no class. Decisions, where WordNet and common sense (or the
definitions of CIFAR-10 and CIFAR-100) part ways:

- airplane: WordNet files warplane under military aircraft, not airplane; ImageNet's "wing" photos
  are airliner wings seen from the cabin. Both -> airplane. Airship, balloon, space shuttle: none.
- automobile / truck: CIFAR-10 says "automobile: sedans, SUVs, things of that sort; truck: only big
  trucks; neither includes pickup trucks". So minivan (under both car and truck in WordNet) ->
  automobile, pickup -> none, ambulance (a car in WordNet, a box-bodied van in the photos) -> truck,
  snowplow (plough trucks in the photos) -> truck, grille (close-ups of car fronts) -> automobile.
  Jeep, cab, station wagon, limousine, Model T, racer, sports car stay automobile; police van and
  moving van stay truck (vans are trucks in WordNet). Go-kart, golf cart, amphibious vehicle,
  tractor, forklift, buses, recreational vehicle, car wheel: none.
- ship: the whole "vessel, watercraft" subtree (CIFAR-10's ship pictures include boats of all
  sizes), so canoe, speedboat, catamaran, submarine and wreck are ships.
- cat: domestic cats only (tabby, tiger cat, Persian, Siamese, Egyptian cat), as in CIFAR-10; big
  cats, lynx and cougar are none.
- dog: the 118 breeds under "dog, domestic dog", plus dingo (a feral domestic dog; WordNet puts it
  with the wild dogs). Wolves, foxes, dhole, African hunting dog, hyena: none.
- deer: ImageNet-1k has no deer. Its antelopes (hartebeest, impala, gazelle) are what a person
  calls a deer at a glance -> deer. Other bovids (ram, bighorn, ibex) are none.
- horse: sorrel only. Zebra is none (not a horse, and no CIFAR class holds it).
- fruit_and_vegetables: edible fruit and vegetables, plus every mushroom-like fungus (CIFAR-100's
  mushroom class is wild mushrooms), corn and ear of corn. Mashed potato is a dish, not produce:
  none. Acorn, buckeye, rose hip, rapeseed (a flower field): none.
- insects: everything under "insect" (beetles, bees, ants, butterflies, dragonflies...). Spiders,
  ticks, centipedes are not insects: none.
- large_omnivores_and_herbivores: CIFAR-100 defines it by five classes (camel, cattle, chimpanzee,
  elephant, kangaroo), not by its name (it puts bears among the large carnivores). We take their
  close kin: bovines (ox, water buffalo, bison), camelids (Arabian camel, llama), great apes
  (chimpanzee, gorilla, orangutan), elephants (Indian, African, tusker) and the wallaby (a kangaroo
  in WordNet). Zebra, hippopotamus, hogs, sheep and goats are none.
"""

import json
from pathlib import Path

from bundle.atomic import write_text_atomic
from bundle.labels import CLASS_NAMES
from classifier.wordnet import read_wordnet
from fallback.label_map import LABEL_MAP_JSON, LABEL_MAP_TEXT, LabelMapError


ROOT_SYNSETS = {
    "airplane": ("n02691156",),  # airplane, aeroplane, plane
    "automobile": ("n02958343",),  # car, auto, automobile
    "bird": ("n01503061",),  # bird
    "cat": ("n02121808",),  # domestic cat, house cat
    "deer": ("n02430045",),  # deer, cervid (no ImageNet-1k class below it; see OVERRIDES)
    "dog": ("n02084071",),  # dog, domestic dog
    "frog": ("n01639765",),  # frog, toad
    "horse": ("n02374451",),  # horse, Equus caballus
    "ship": ("n04530566",),  # vessel, watercraft
    "truck": ("n04490091",),  # truck, motortruck
    "fruit_and_vegetables": ("n07705931", "n07707451", "n12992868"),  # edible fruit, vegetable, fungus
    "insects": ("n02159955",),  # insect
    # cattle, Old World buffalo, camel, great ape, elephant, kangaroo
    "large_omnivores_and_herbivores": ("n02402425", "n02407959", "n02437136", "n02480153", "n02503517", "n01877134"),
}

# ImageNet wnid -> (our class or None, why). Applied after the hierarchy; the only way to settle
# a class that falls under two of our roots.
OVERRIDES = {
    "n04552348": ("airplane", "warplane: WordNet files it under military aircraft, not airplane"),
    "n04592741": ("airplane", "wing: ImageNet's photos are airliner wings seen from the cabin"),
    "n03770679": ("automobile", "minivan: under both car and truck; CIFAR-10's automobile includes SUVs and the like"),
    "n03930630": (None, "pickup: CIFAR-10's automobile and truck both exclude pickup trucks"),
    "n02701002": ("truck", "ambulance: a car in WordNet, a box-bodied van in the photos"),
    "n04252225": ("truck", "snowplow: the photos are trucks with plough blades"),
    "n03459775": ("automobile", "grille: close-ups of car fronts"),
    "n02115641": ("dog", "dingo: a feral domestic dog; WordNet files it with the wild dogs"),
    "n02422106": ("deer", "hartebeest: ImageNet has no deer; antelopes look like deer to a person"),
    "n02422699": ("deer", "impala: ImageNet has no deer; antelopes look like deer to a person"),
    "n02423022": ("deer", "gazelle: ImageNet has no deer; antelopes look like deer to a person"),
    "n07711569": (None, "mashed potato: a dish, not produce"),
    "n12144580": ("fruit_and_vegetables", "corn: WordNet files it as a seed, people as a vegetable"),
    "n13133613": ("fruit_and_vegetables", "ear: ImageNet's photos are ears of corn"),
    "n02410509": ("large_omnivores_and_herbivores", "bison: a bovine, directly under bovid in this hierarchy"),
    "n02437616": ("large_omnivores_and_herbivores", "llama: a camelid, outside 'camel' in this hierarchy"),
    "n01871265": ("large_omnivores_and_herbivores", "tusker: an elephant, filed directly under mammal here"),
}


def build_label_map(wordnet_dir, class_names=CLASS_NAMES):
    """{ImageNet-1k index: index into class_names, or None when the class is none of ours}."""
    wordnet = read_wordnet(wordnet_dir)
    unknown = [wnid for wnids in ROOT_SYNSETS.values() for wnid in wnids if wnid not in wordnet.names]
    if unknown or set(ROOT_SYNSETS) != set(class_names):
        raise LabelMapError(f"ROOT_SYNSETS does not fit these WordNet files / classes (unknown roots {unknown}).")
    label_map, conflicts = {}, []
    for index, wnid in enumerate(wordnet.imagenet_wnids):
        lineage = wordnet.ancestors(wnid) | {wnid}
        matches = [name for name, roots in ROOT_SYNSETS.items() if lineage.intersection(roots)]
        if wnid in OVERRIDES:
            name = OVERRIDES[wnid][0]
        elif len(matches) > 1:
            conflicts.append(f"{wnid} ({wordnet.imagenet_names[index]}): {matches}")
            continue
        else:
            name = matches[0] if matches else None
        label_map[index] = None if name is None else class_names.index(name)
    if conflicts:
        raise LabelMapError("ImageNet classes under two of our classes need an entry in OVERRIDES: " + "; ".join(conflicts))
    return label_map


def class_wnids(label_map, imagenet_wnids, class_names=CLASS_NAMES):
    """{our class name: [ImageNet wnids mapped to it]} (the readable form)."""
    by_class = {name: [] for name in class_names}
    for index, target in sorted(label_map.items()):
        if target is not None:
            by_class[class_names[target]].append(imagenet_wnids[index])
    return by_class


def save_label_map(directory, label_map, wordnet_dir, class_names=CLASS_NAMES):
    """Write label_map.txt (one line per class: name, then its wnids) and label_map.json."""
    wordnet = read_wordnet(wordnet_dir)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    by_class = class_wnids(label_map, wordnet.imagenet_wnids, class_names)
    unmapped = sum(target is None for target in label_map.values())
    lines = [
        "# Our class, then the ImageNet-1k wnids whose probability counts for it (built by classifier/label_map.py",
        f"# from the WordNet hierarchy). The other {unmapped} ImageNet classes count for none of ours.",
    ]
    lines += [" ".join([name] + wnids) for name, wnids in by_class.items()]
    write_text_atomic(directory / LABEL_MAP_TEXT, "\n".join(lines) + "\n")
    document = {
        "class_names": list(class_names),
        "imagenet_wnids": list(wordnet.imagenet_wnids),
        "imagenet_to_class": [label_map[index] for index in range(len(wordnet.imagenet_wnids))],
        "overrides": {wnid: {"class": target, "why": why} for wnid, (target, why) in OVERRIDES.items()},
    }
    write_text_atomic(directory / LABEL_MAP_JSON, json.dumps(document, indent=1) + "\n")
    return directory / LABEL_MAP_TEXT, directory / LABEL_MAP_JSON
