"""Class names of the built-in datasets, index -> name, as their authors list them.

ImageFolder and ImageNet trees name their classes by their sorted folder names (:mod:`asge.data.folders`).
"""
from __future__ import annotations

DIGITS = tuple(str(i) for i in range(10))

FASHION_MNIST = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

#: CIFAR-100's 100 fine labels (the ``fine_label_names`` of its ``meta`` file: alphabetical).
CIFAR100 = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant
flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree
plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail
snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout
tulip turtle wardrobe whale willow_tree wolf woman worm""".split())

CLASS_NAMES = {"digits": DIGITS, "mnist": DIGITS, "fashion-mnist": FASHION_MNIST, "cifar10": CIFAR10,
               "cifar100": CIFAR100}


def class_names(dataset: str, num_classes: int) -> tuple[str, ...]:
    """The names of ``dataset``'s classes; ``"0"``..``"N-1"`` for a dataset without fixed names."""
    names = CLASS_NAMES.get(dataset, ())
    return names if len(names) == num_classes else tuple(str(i) for i in range(num_classes))


__all__ = ["CLASS_NAMES", "class_names", "DIGITS", "FASHION_MNIST", "CIFAR10", "CIFAR100"]
