"""Hugging Face Spaces entry point: builds the demo (see ``attribution_app``); ``python app.py`` serves it.

``python app.py [--zoo NAME|FOLDER|hf-hub:org/repo] [--share]``; the environment variables are listed
in ``attribution_app/settings.py`` and the README.
"""
from attribution_app import build_demo, main

demo = build_demo()

if __name__ == "__main__":
    main(demo)
