"""Thin command-line front ends: parse, call one core function, map errors to exit codes, print."""
