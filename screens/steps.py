"""The steps of the TUI, in order: (name, title). Screens and the app read it; it imports
nothing, so neither needs the other to know where it stands."""

STEPS = [
    ("overview", "Overview"),
    ("source", "Source volume"),
    ("image", "Image"),
    ("size", "Size"),
    ("boot", "Boot"),
    ("review", "Review"),
    ("apply", "Apply"),
]
STEP_NAMES = [name for name, _ in STEPS]


def title(name: str) -> str:
    """ "Step 3 of 7: Image" for a step's name."""
    index = STEP_NAMES.index(name)
    return f"Step {index + 1} of {len(STEPS)}: {STEPS[index][1]}"
