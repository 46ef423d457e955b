"""Synthetic transcripts with known topic boundaries, for the chapters and search-by-meaning tests."""

TOPICS = {
    "sourdough": [
        "Today we start with sourdough bread and how a starter works.",
        "A starter is just flour and water that wild yeast and bacteria have colonised.",
        "You feed it every day and it doubles in a few hours when it is healthy.",
        "The dough needs a long cold proof in the fridge overnight.",
        "Shaping the loaf builds tension on the surface so it rises upward in the oven.",
        "Bake it in a hot Dutch oven with the lid on for the first twenty minutes.",
        "The crust turns dark and crackly while the crumb stays open and moist.",
        "Let the bread cool completely before you slice it.",
    ],
    "telescopes": [
        "Now let's talk about telescopes for watching the night sky.",
        "A refractor uses lenses while a reflector gathers light with a mirror.",
        "Aperture matters more than magnification for seeing faint galaxies.",
        "Saturn's rings are visible even through a small backyard telescope.",
        "Light pollution from cities washes out nebulae and the Milky Way.",
        "Astronomers drive to dark sites far from streetlights to observe.",
        "A star chart helps you find the planets and constellations each season.",
        "Let your eyes adapt to the darkness for half an hour before observing.",
    ],
    "mortgages": [
        "Our next question is about mortgages and interest rates.",
        "A fixed rate loan keeps the same monthly payment for the whole term.",
        "A variable rate follows the central bank and can rise when inflation climbs.",
        "Lenders look at your credit score and your debt to income ratio.",
        "A bigger deposit lowers the loan to value and usually gets you a cheaper rate.",
        "Refinancing can save money when rates fall, but watch the fees.",
        "Paying extra toward the principal shortens the loan and cuts total interest.",
        "Always compare the annual percentage rate, not just the headline rate.",
    ],
    "marathon": [
        "Let's switch to marathon training for first time runners.",
        "Most plans build weekly mileage slowly over sixteen to twenty weeks.",
        "The long run each weekend teaches your legs to handle hours on the road.",
        "Easy runs should be slow enough that you can hold a conversation.",
        "Runners practise taking energy gels and water during long workouts.",
        "A taper in the last three weeks lets the muscles recover before race day.",
        "Good running shoes and blister-free socks prevent a lot of pain.",
        "Start the race slower than you think so you do not hit the wall at mile twenty.",
    ],
    "beekeeping": [
        "Finally, a few words on keeping honey bees in the garden.",
        "A colony has one queen, thousands of worker bees and some drones.",
        "Beekeepers inspect the hive frames for eggs, brood and stored honey.",
        "Varroa mites are the biggest threat to a healthy colony.",
        "Wear a veil and use a smoker to keep the bees calm during inspections.",
        "Bees forage on clover, lavender and fruit blossoms for nectar and pollen.",
        "The honey harvest comes in late summer when the frames are capped with wax.",
        "Leave enough honey in the hive so the colony survives the winter.",
    ],
}


def transcript(order=("sourdough", "telescopes", "mortgages", "marathon", "beekeeping"), sec_per_sentence=6.0,
               per_segment=2):
    """(segments, boundaries): Segment objects of ``per_segment`` sentences, and the index of each topic's first sentence."""
    from podinsight_dagster.transcribe.options import Segment

    sentences, boundaries = [], []
    for name in order:
        if sentences:
            boundaries.append(len(sentences))
        sentences.extend(TOPICS[name])
    segments = []
    for i in range(0, len(sentences), per_segment):
        group = sentences[i:i + per_segment]
        segments.append(Segment(start=i * sec_per_sentence, end=(i + len(group)) * sec_per_sentence,
                                text=" ".join(group), avg_logprob=None, no_speech_prob=None, compression_ratio=1.0))
    return segments, boundaries
