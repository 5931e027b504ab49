"""The HTTP edge: the only code that imports Flask or twilio.twiml (webhooks, the reps' API, health)."""
