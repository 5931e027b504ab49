"""Reading the store, one module per table (or per question that spans a few).

Every function takes the unit of work's ``Session``. They find and lock rows and answer questions; they never
change a state field (the models' lifecycle methods do, in ``crm_sync.models``).
"""
