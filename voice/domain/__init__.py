"""Pure values and rules of a call: replies, REST actions, priority, wait estimates, whispers, errors."""
