"""Side effects: query engines, storage, labeling services."""
