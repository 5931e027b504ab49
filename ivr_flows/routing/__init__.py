"""Speech routing: which department a caller's words mean, from a flow's example phrases.

``base`` (the :class:`~ivr_flows.routing.base.Classifier` protocol and what every engine shares), ``tfidf`` (the
floor: words only, no NumPy), ``embedding`` (the scoring and encoder plumbing every embedding engine shares),
``wordllama``, ``minilm`` and ``mpnet`` (the engines, light to heavy), ``example_picker`` (choosing examples from
labelled calls) and ``factory`` (the engine choice, ``auto`` included, and building a flow's classifier).

Nothing is imported here, on purpose: importing ``ivr_flows.routing.base`` (as the flow engine does) must not pull
in the factory, let alone NumPy.
"""
