"""Class names for DomainBed datasets, in the order of DomainBed's labels.

DomainBed never hands class names to an algorithm. The hparams registry puts the table below into the
``class_names`` hparam of every dataset it lists (``known_class_names``), so hparams built for a dataset
carry its names. Resolution order (``resolve_class_names``):
1. the ``class_names`` hparam, unless it is that registry default and the dataset train.py has loaded
   says otherwise (then 2: the folders are what the labels mean);
2. the class folders of the dataset train.py has loaded (ImageFolder labels = sorted folder names);
3. the table below for the dataset's name (folder datasets: ImageFolder order; others: label order);
4. generic names for synthetic data (Debug28, Debug224, ColoredMNIST);
and the count must equal ``num_classes``, or it is an error.
"""
import warnings

# Folder datasets: ImageFolder sorts class folders with Python's sort (upper case first), so the tables
# are sorted the same way rather than typed in label order.
FOLDER_CLASS_NAMES = {
    "VLCS": sorted(["bird", "car", "chair", "dog", "person"]),
    "PACS": sorted(["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]),
    "TerraIncognita": sorted(["bird", "bobcat", "cat", "coyote", "dog", "empty", "opossum", "rabbit",
                              "raccoon", "squirrel"]),
    "OfficeHome": sorted([
        "Alarm_Clock", "Backpack", "Batteries", "Bed", "Bike", "Bottle", "Bucket", "Calculator", "Calendar",
        "Candles", "Chair", "Clipboards", "Computer", "Couch", "Curtains", "Desk_Lamp", "Drill", "Eraser",
        "Exit_Sign", "Fan", "File_Cabinet", "Flipflops", "Flowers", "Folder", "Fork", "Glasses", "Hammer",
        "Helmet", "Kettle", "Keyboard", "Knives", "Lamp_Shade", "Laptop", "Marker", "Monitor", "Mop", "Mouse",
        "Mug", "Notebook", "Oven", "Pan", "Paper_Clip", "Pen", "Pencil", "Postit_Notes", "Printer", "Push_Pin",
        "Radio", "Refrigerator", "Ruler", "Scissors", "Screwdriver", "Shelf", "Sink", "Sneakers", "Soda",
        "Speaker", "Spoon", "TV", "Table", "Telephone", "ToothBrush", "Toys", "Trash_Can", "Webcam"]),
    "DomainNet": sorted([
        "aircraft_carrier", "airplane", "alarm_clock", "ambulance", "angel", "animal_migration", "ant", "anvil",
        "apple", "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn", "baseball", "baseball_bat",
        "basket", "basketball", "bat", "bathtub", "beach", "bear", "beard", "bed", "bee", "belt", "bench",
        "bicycle", "binoculars", "bird", "birthday_cake", "blackberry", "blueberry", "book", "boomerang",
        "bottlecap", "bowtie", "bracelet", "brain", "bread", "bridge", "broccoli", "broom", "bucket",
        "bulldozer", "bus", "bush", "butterfly", "cactus", "cake", "calculator", "calendar", "camel", "camera",
        "camouflage", "campfire", "candle", "cannon", "canoe", "car", "carrot", "castle", "cat", "ceiling_fan",
        "cello", "cell_phone", "chair", "chandelier", "church", "circle", "clarinet", "clock", "cloud",
        "coffee_cup", "compass", "computer", "cookie", "cooler", "couch", "cow", "crab", "crayon", "crocodile",
        "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog", "dolphin", "donut",
        "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell", "ear", "elbow", "elephant",
        "envelope", "eraser", "eye", "eyeglasses", "face", "fan", "feather", "fence", "finger", "fireplace",
        "firetruck", "fire_hydrant", "fish", "flamingo", "flashlight", "flip_flops", "floor_lamp", "flower",
        "flying_saucer", "foot", "fork", "frog", "frying_pan", "garden", "garden_hose", "giraffe", "goatee",
        "golf_club", "grapes", "grass", "guitar", "hamburger", "hammer", "hand", "harp", "hat", "headphones",
        "hedgehog", "helicopter", "helmet", "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital",
        "hot_air_balloon", "hot_dog", "hot_tub", "hourglass", "house", "house_plant", "hurricane", "ice_cream",
        "jacket", "jail", "kangaroo", "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf",
        "leg", "lighter", "lighthouse", "lightning", "light_bulb", "line", "lion", "lipstick", "lobster",
        "lollipop", "mailbox", "map", "marker", "matches", "megaphone", "mermaid", "microphone", "microwave",
        "monkey", "moon", "mosquito", "motorbike", "mountain", "mouse", "moustache", "mouth", "mug", "mushroom",
        "nail", "necklace", "nose", "ocean", "octagon", "octopus", "onion", "oven", "owl", "paintbrush",
        "paint_can", "palm_tree", "panda", "pants", "paper_clip", "parachute", "parrot", "passport", "peanut",
        "pear", "peas", "pencil", "penguin", "piano", "pickup_truck", "picture_frame", "pig", "pillow",
        "pineapple", "pizza", "pliers", "police_car", "pond", "pool", "popsicle", "postcard", "potato",
        "power_outlet", "purse", "rabbit", "raccoon", "radio", "rain", "rainbow", "rake", "remote_control",
        "rhinoceros", "rifle", "river", "rollerskates", "roller_coaster", "sailboat", "sandwich", "saw",
        "saxophone", "school_bus", "scissors", "scorpion", "screwdriver", "sea_turtle", "see_saw", "shark",
        "sheep", "shoe", "shorts", "shovel", "sink", "skateboard", "skull", "skyscraper", "sleeping_bag",
        "smiley_face", "snail", "snake", "snorkel", "snowflake", "snowman", "soccer_ball", "sock", "speedboat",
        "spider", "spoon", "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star", "steak", "stereo",
        "stethoscope", "stitches", "stop_sign", "stove", "strawberry", "streetlight", "string_bean",
        "submarine", "suitcase", "sun", "swan", "sweater", "swing_set", "sword", "syringe", "t-shirt", "table",
        "teapot", "teddy-bear", "telephone", "television", "tennis_racquet", "tent", "The_Eiffel_Tower",
        "The_Great_Wall_of_China", "The_Mona_Lisa", "tiger", "toaster", "toe", "toilet", "tooth", "toothbrush",
        "toothpaste", "tornado", "tractor", "traffic_light", "train", "tree", "triangle", "trombone", "truck",
        "trumpet", "umbrella", "underwear", "van", "vase", "violin", "washing_machine", "watermelon",
        "waterslide", "whale", "wheel", "windmill", "wine_bottle", "wine_glass", "wristwatch", "yoga", "zebra",
        "zigzag"]),
}

_SPAWRIOUS = ["bulldog", "corgi", "dachshund", "labrador"]  # SpawriousBenchmark.class_list (label order)
# Non-folder datasets, in label order.
LABEL_CLASS_NAMES = {
    "RotatedMNIST": [str(digit) for digit in range(10)],
    "WILDSCamelyon": ["normal tissue", "tumor tissue"],
    "WILDSFMoW": [  # wilds.datasets.fmow_dataset.categories
        "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site",
        "barn", "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
        "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant",
        "fire_station", "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station",
        "helipad", "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse",
        "military_facility", "multi-unit_residential", "nuclear_powerplant", "office_building",
        "oil_or_gas_facility", "park", "parking_lot_or_garage", "place_of_worship", "police_station", "port",
        "prison", "race_track", "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard",
        "shopping_mall", "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium",
        "storage_tank", "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening",
        "waste_disposal", "water_treatment_facility", "wind_farm", "zoo"],
    **{f"Spawrious{kind}_{level}": _SPAWRIOUS for kind in ("O2O", "M2M") for level in ("easy", "medium", "hard")},
}

# Synthetic data: labels carry no meaning a prompt could name.
GENERIC_NAME_DATASETS = ("Debug28", "Debug224", "ColoredMNIST")


def generic_class_names(num_classes):
    return [f"class {i}" for i in range(num_classes)]


def class_names_of_loaded_dataset(dataset):
    """Class names of a DomainBed dataset object as its labels use them, or None when it does not say.

    ImageFolder environments expose ``classes`` (sorted folder names = label order); every environment
    must agree, otherwise DomainBed's labels themselves mean different things in different environments.
    """
    environments = list(getattr(dataset, "datasets", None) or [])
    per_environment = [list(env.classes) for env in environments if hasattr(env, "classes")]
    if per_environment:
        if any(names != per_environment[-1] for names in per_environment):
            raise ValueError("the environments of this dataset have different class folders, so one label means "
                             f"different classes in different environments: {per_environment}. Make every "
                             "environment hold the same class folders, or pass the hparam class_names")
        return per_environment[-1]
    class_list = getattr(dataset, "class_list", None)  # Spawrious
    return list(class_list) if class_list is not None else None


def known_class_names(dataset_name):
    """The built-in names of a dataset in DomainBed's label order (a new list), or None."""
    names = FOLDER_CLASS_NAMES.get(dataset_name) or LABEL_CLASS_NAMES.get(dataset_name)
    return None if names is None else list(names)


def resolve_class_names(num_classes, hparam_names=None, dataset_name=None, loaded_dataset=None):
    """Class names in DomainBed's label order (see the module docstring); returns (names, source)."""
    loaded_names = None if loaded_dataset is None else class_names_of_loaded_dataset(loaded_dataset)
    registry_default = hparam_names is not None and list(hparam_names) == known_class_names(dataset_name)
    if hparam_names is not None and not (registry_default and loaded_names is not None):
        names, source = list(hparam_names), "the hparam class_names"
    elif loaded_names is not None:
        names, source = loaded_names, f"the class folders of {dataset_name}"
    elif known_class_names(dataset_name) is not None:
        names, source = known_class_names(dataset_name), f"the built-in table for {dataset_name}"
    elif dataset_name in GENERIC_NAME_DATASETS:
        names, source = generic_class_names(num_classes), f"generic names for the synthetic {dataset_name}"
    elif dataset_name is None:
        warnings.warn("CLIP algorithm built outside domainbed.scripts.train without the hparam class_names: "
                      f"using placeholder names 'class 0'..'class {num_classes - 1}'. Zero-shot text features "
                      "of placeholders are meaningless; pass class_names, or load a model.pkl (it carries them)",
                      stacklevel=3)
        names, source = generic_class_names(num_classes), "placeholders (no dataset known)"
    else:
        raise ValueError(f"no class names known for dataset {dataset_name!r}: pass them in DomainBed's label "
                         "order with --hparams '{\"class_names\": [...]}'")
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names from {source} but the dataset has {num_classes} classes; "
                         "pass the right list in label order with --hparams '{\"class_names\": [...]}'")
    return names, source
