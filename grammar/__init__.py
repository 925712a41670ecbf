"""The `.lark` grammar of the schedule language, installed as package data."""
