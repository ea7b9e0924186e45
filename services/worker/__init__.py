"""The data plane: stream consumers that run the agent loop. Never touches PostgreSQL.

LiteLLM fetches its price map from GitHub when first imported unless told to read its
bundled copy. Set here, before any module of the worker can import it: a module that
imported litellm ahead of `llm.py` made every start wait out three failed fetches
offline and print LiteLLM's own warnings, not JSON, before logging was configured.
"""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
