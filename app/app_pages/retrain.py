"""Retrain: start training or tuning jobs, watch them live, compare with the active model, promote."""

import streamlit as st

st.title("Retrain")
st.info("The jobs layer is being connected.")
