def main() -> None:
    raise SystemExit("rftlab: front end not built yet")
