#!/usr/bin/env python3
"""Writes bench/prune-qa.json: 60 questions whose answer is one sentence placed among
distractor notes, for `hearth prune-bench` (pkg-scripts/bench/prune.sh). Deterministic."""
import json
import random
from pathlib import Path

DISTRACTORS = [
    "The village market opens every Saturday morning, and farmers bring vegetables, cheese and bread from the nearby hills. Many visitors come early to find the freshest produce before it sells out.",
    "The river that runs through the valley was once used to power three mills. Today only one of them still stands, and it has been turned into a small museum about local history.",
    "In winter the roads over the pass are often closed because of snow, so travellers take the longer route along the lake. The journey takes about two hours more, but the views are beautiful.",
    "The school library received a donation of old maps last year. Students now use them in geography lessons to compare how the coastline has changed over the centuries.",
    "Our neighbours planted a row of apple trees along the fence in spring. By autumn the branches were heavy with fruit, and they shared baskets of apples with everyone on the street.",
    "The bakery on the corner changed its opening hours after the summer. It now closes at noon on Sundays, which surprised many people who liked to buy fresh rolls for lunch.",
    "A group of volunteers cleans the beach every month. They collect plastic bottles, fishing nets and bits of rope, and they record what they find to share with researchers.",
    "The old cinema in the town centre shows classic films on Thursday evenings. Tickets are cheap, and the owner often gives a short talk about the film before it starts.",
    "Heavy rain in October flooded the lower fields for almost a week. The farmers had to move their sheep to higher ground and wait for the water to drain away.",
    "The choir practises in the church hall every Tuesday. New singers are always welcome, and nobody needs to be able to read music to join in.",
    "The bus company added a late service on Fridays. It leaves the station just before midnight and stops in every village along the coast road.",
    "My grandmother kept a diary for more than forty years. The notebooks are full of recipes, weather reports and small stories about the people she met.",
    "The new footbridge over the railway was opened in March. It is wide enough for bicycles and has lights that switch on automatically when it gets dark.",
    "Every summer the town holds a festival with music, food stalls and a parade. The streets are closed to cars for the whole weekend, and the celebrations go on late into the night.",
    "The garden centre sells seeds from local growers. Their tomatoes are especially popular because they ripen early and can survive a cold night or two.",
    "The swimming pool will be closed for repairs during the first two weeks of the holidays. The council says the new heating system will make the water much warmer.",
    "A fox has been seen several times near the allotments. It seems to be looking for food, and the gardeners have started to cover their compost heaps at night.",
    "The museum has a new room about the history of the harbour. It shows models of the ships that used to carry coal and timber along the coast.",
    "The hiking club walked to the top of the ridge last weekend. It was windy and cold at the summit, but the sky was clear and they could see three lakes below.",
    "The post office moved to a smaller building next to the pharmacy. It is easier to reach now, although the queue sometimes goes out of the door on Monday mornings.",
    "The farm shop started selling honey from its own hives. The bees collect nectar from the heather on the moor, which gives the honey a dark colour and a strong taste.",
    "Our street had a power cut on Wednesday evening. It lasted about two hours, and people brought candles and board games out onto their doorsteps.",
    "The tennis courts in the park were repainted during the spring. The lines are bright white again, and the nets have been replaced after many years of use.",
    "The local newspaper printed a story about the oldest tree in the county. Experts believe the oak is more than six hundred years old and was planted by monks.",
    "The café by the station serves soup and sandwiches at lunchtime. In the afternoon it fills up with students who come to study and drink tea.",
    "The lighthouse on the point is no longer used by ships. A charity looks after it now, and visitors can climb the stairs to the lamp room in summer.",
    "The orchestra gave a free concert in the square on the first warm evening of the year. Families sat on blankets, and children danced in front of the stage.",
    "The council plans to plant more trees along the main road. The work will start in November, when the ground is soft and the young trees can settle before spring.",
]

NAMES = ["Alice", "Tomas", "Priya", "Jonah", "Mirela", "Kenji", "Oskar", "Fatima", "Dmitri", "Lucia", "Ravi", "Greta"]
TOWNS = ["Brackenford", "Elmsworth", "Quillan", "Dunmore Cross", "Hallowmere", "Carrowick", "Fenbury", "Westerlyn"]
COLORS = ["blue", "green", "red", "yellow", "orange", "purple", "grey", "black"]
BAGS = ["gym bag", "suitcase", "backpack", "toolbox", "briefcase", "lunch box"]
OBJECTS = ["flower pot", "doormat", "garden gnome", "loose brick", "blue bucket", "wooden bench"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PETS = ["Biscuit", "Pepper", "Marmalade", "Ziggy", "Noodle", "Captain", "Clover", "Domino"]
WORDS = ["lantern", "pebble", "thunder", "marigold", "sparrow", "velvet", "harbour", "compass"]


def fact(rng: random.Random):
    kind = rng.randrange(7)
    name, town = rng.choice(NAMES), rng.choice(TOWNS)
    if kind == 0:
        color, bag, code = rng.choice(COLORS), rng.choice(BAGS), str(rng.randrange(1000, 10000))
        return (f"The locker code for the {color} {bag} is {code}.",
                f"What is the locker code for the {color} {bag}?", code)
    if kind == 1:
        obj = rng.choice(OBJECTS)
        return (f"{name} keeps the spare key under the {obj}.", f"Where does {name} keep the spare key?", obj)
    if kind == 2:
        day = rng.choice(DAYS)
        return (f"The meeting with {name} was moved to {day}.", f"Which day was the meeting with {name} moved to?", day)
    if kind == 3:
        pet = rng.choice(PETS)
        return (f"{name}'s cat is called {pet}.", f"What is {name}'s cat called?", pet)
    if kind == 4:
        platform = str(rng.randrange(10, 30))
        return (f"The train to {town} leaves from platform {platform}.",
                f"Which platform does the train to {town} leave from?", platform)
    if kind == 5:
        return (f"{name} was born in {town}.", f"In which town was {name} born?", town)
    word = rng.choice(WORDS)
    return (f"The wifi password at the cabin is {word}.", "What is the wifi password at the cabin?", word)


def main():
    rng = random.Random(20261125)
    items = []
    for _ in range(60):
        notes = rng.sample(DISTRACTORS, 8)
        sentence, question, answer = fact(rng)
        at = rng.randrange(len(notes))
        parts = notes[at].rstrip(".").split(". ")
        cut = rng.randrange(len(parts) + 1)
        notes[at] = ". ".join(parts[:cut] + [sentence.rstrip(".")] + parts[cut:]) + "."
        items.append({"notes": notes, "question": question, "answer": answer})
    out = Path(__file__).resolve().parent / "prune-qa.json"
    out.write_text(json.dumps(items, indent=1) + "\n")
    print(f"wrote {len(items)} items to {out}")


if __name__ == "__main__":
    main()
