"""The clinicians' web app: ``colonseg app`` starts :mod:`colonseg.app.page` in Streamlit."""
