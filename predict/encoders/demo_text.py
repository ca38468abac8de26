"""The demo encoder's language: the caption grammar of the synthetic scenes, its tokenizer and its words.

The demo encoder learns captions of this grammar (``predict/demo/train_demo_encoder.py``) and, without a
checkpoint, takes its vocabulary from it (:func:`caption_vocabulary`); the scene generator writes its
captions from it (:func:`predict.demo.synthetic.make_caption`). It lives beside the encoder, which imports
nothing of ``predict.demo``: the tokenizer and the words shape the encoder's vectors (they are in their key).
"""
from __future__ import annotations

import unicodedata
from itertools import groupby

NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
ROOF_WORDS = ("white", "red", "cyan", "black")  # the roof colours a residential caption names

# Main phrases per kind; {n} is a number word, {roofs} a roof colour phrase.
CAPTIONS = {
    "football_field": ["a green football field surrounded by a red track",
                       "green soccer field surrounded by red running track",
                       "the green football field is surrounded by a red running track",
                       "a playground with a green football field and a red track"],
    "baseball_field": ["a green baseball field",
                       "a baseball field with a brown infield",
                       "green baseball field with a sandy diamond",
                       "there is a baseball field"],
    "tennis_courts": ["{n} tennis courts",
                      "there are {n} tennis courts",
                      "{n} tennis courts built side by side",
                      "some tennis courts with white lines"],
    "parking_lot": ["some cars are parked in a gray parking lot",
                    "a parking lot full of cars",
                    "lots of cars parked in a parking lot",
                    "a gray parking lot with rows of cars"],
    "airport": ["some white planes parked in the gray airport",
                "many airplanes parked in the airport",
                "white planes parked on the apron of the airport",
                "an airport with several white planes"],
    "lake": ["a dark green lake",
             "there is a green pond",
             "a small dark lake",
             "a green lake with a curved shore"],
    "bridge": ["a bridge spans a dark blue river",
               "a white bridge over the river",
               "a gray bridge crosses the dark river",
               "there is a bridge across the river"],
    "residential": ["a residential area made up of houses with {roofs} roofs",
                    "houses with {roofs} roofs",
                    "residential area of houses with {roofs} roofs",
                    "many houses with {roofs} roofs"],
    "oil_tanks": ["some white oil storage tanks on gray concrete",
                  "several large white oil tanks",
                  "white oil storage tanks built on the gray ground",
                  "round white storage tanks"],
    "ships": ["some white ships on the dark sea",
              "boats floating on the black sea",
              "white boats docked by the dark blue sea",
              "several ships sailing on the dark sea"],
    "bare_land": ["a piece of yellow bare land",
                  "some vegetation grows sporadically on the bare land",
                  "a large brown bare land",
                  "there is a bare land"],
}
CONTEXTS = ["next to the gray road", "surrounded by green trees", "beside the green lawn",
            "near the dense forest", "in the middle of green grass", "by the road",
            "surrounded by green woods", "next to a green lawn"]
BACKGROUND_CAPTIONS = {
    "forest": ["dense green forest", "green trees", "a dark green forest"],
    "lawn": ["a green lawn", "green grass", "an open green lawn"],
    "road": ["a gray road", "a straight gray road", "gray roads"],
    "river": ["a dark blue river", "a river", "the dark river"],
    "sea": ["the dark blue sea", "black sea", "the dark sea"],
    "grass_field": ["a green grass field", "a bright green lawn", "a rectangular green field"],
    "concrete": ["an empty gray square", "a gray concrete ground", "an open gray space"],
    "buildings": ["large buildings with white roofs", "some big gray buildings", "industrial buildings"],
}


def _in_word(char: str) -> bool:
    """A letter of any script, or a combining mark (the dot of a lower-cased "İ"): part of a word."""
    return char.isalpha() or unicodedata.category(char).startswith("M")


def tokenize(text: str) -> list[str]:
    """Lower-case words of a caption (runs of letters), the unit of the demo encoder's vocabulary. A word
    with non-ASCII letters stays one word (NFC-composed), so that an unknown "brïdge" is reported as such
    instead of read as known ASCII fragments; ASCII text gives the ``[a-z]+`` words it always gave.

    >>> tokenize("A brïdge, 2 lakes' shore"), tokenize("bri\u0308dge")
    (['a', 'brïdge', 'lakes', 'shore'], ['brïdge'])
    """
    return ["".join(chars) for inside, chars in groupby(unicodedata.normalize("NFC", text.lower()), _in_word)
            if inside]


def caption_vocabulary() -> list[str]:
    """Every word the caption grammar can produce, sorted (deterministic)."""
    texts = [t for templates in CAPTIONS.values() for t in templates] + CONTEXTS
    texts += [t for templates in BACKGROUND_CAPTIONS.values() for t in templates]
    texts += list(NUMBER_WORDS.values()) + list(ROOF_WORDS) + ["and"]
    return sorted({w for t in texts for w in tokenize(t.replace("{n}", "").replace("{roofs}", ""))})
