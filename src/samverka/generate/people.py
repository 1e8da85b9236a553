"""Swedish names, streets, towns and fictional phone numbers for synthetic people and addresses."""

from __future__ import annotations

from random import Random

FEMALE_NAMES = (
    "Anna", "Eva", "Maria", "Karin", "Kristina", "Lena", "Sara", "Emma", "Kerstin", "Ingrid",
    "Marie", "Malin", "Elsa", "Alice", "Maja", "Ella", "Wilma", "Ebba", "Saga", "Astrid",
    "Agnes", "Freja", "Linnéa", "Elin", "Ida", "Johanna", "Sofia", "Birgitta", "Margareta", "Elisabeth",
    "Gunilla", "Ulla", "Britt", "Siv", "Inger", "Åsa", "Märta", "Signe", "Stina", "Helena",
    "Camilla", "Therese", "Louise", "Frida", "Moa", "Vera", "Alva", "Selma", "Greta", "Yasmin",
)  # fmt: skip

MALE_NAMES = (
    "Lars", "Anders", "Johan", "Per", "Erik", "Karl", "Nils", "Mikael", "Jan", "Hans",
    "Peter", "Olof", "Gustav", "Oskar", "Lucas", "Liam", "William", "Elias", "Noah", "Hugo",
    "Alexander", "Adam", "Axel", "Filip", "Viktor", "Emil", "Isak", "Leo", "Ludvig", "Måns",
    "Sven", "Björn", "Göran", "Stig", "Bengt", "Åke", "Ingvar", "Lennart", "Kjell", "Rolf",
    "Fredrik", "Daniel", "Magnus", "Mattias", "Henrik", "Jonas", "Tobias", "Albin", "Omar", "Ali",
)  # fmt: skip

FAMILY_NAMES = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
    "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson", "Jönsson",
    "Lindberg", "Jakobsson", "Magnusson", "Lindström", "Olofsson", "Lindqvist", "Lindgren", "Berg",
    "Axelsson", "Bergström", "Lundberg", "Lind", "Lundgren", "Lundqvist", "Mattsson", "Berglund",
    "Fredriksson", "Sandberg", "Henriksson", "Forsberg", "Sjöberg", "Wallin", "Engström", "Eklund",
    "Danielsson", "Lundin", "Håkansson", "Björk", "Bergman", "Gunnarsson", "Holm", "Wikström",
    "Samuelsson", "Isaksson", "Fransson", "Bergqvist", "Nyström", "Holmberg", "Arvidsson", "Löfgren",
    "Söderberg", "Nyberg", "Blomqvist", "Claesson", "Nordström", "Mårtensson", "Lundström", "Viklund",
    "Björklund", "Eliasson", "Pålsson", "Berggren", "Ali", "Mohammed", "Ahmed", "Hassan", "Yilmaz", "Nguyen",
)  # fmt: skip

STREETS = (
    "Storgatan", "Drottninggatan", "Kungsgatan", "Skolgatan", "Järnvägsgatan", "Kyrkogatan", "Nygatan",
    "Parkvägen", "Björkvägen", "Ringvägen", "Sjövägen", "Industrigatan", "Tallvägen", "Granvägen",
    "Ekvägen", "Södra vägen", "Lärkvägen", "Rosenvägen", "Mejerivägen", "Klostergatan", "Trädgårdsgatan",
    "Hamngatan", "Strandvägen", "Bäckvägen", "Vallgatan", "Östra Storgatan", "Tullgatan", "Bruksgatan",
    "Smedjegatan", "Västra Ringvägen", "Lingonvägen", "Blåbärsvägen", "Åsgatan", "Lönnvägen", "Hagvägen",
)  # fmt: skip

# Towns and the first three digits of their postal codes.
TOWNS: tuple[tuple[str, str], ...] = (
    ("Västerås", "722"), ("Västerås", "723"), ("Västerås", "724"), ("Västerås", "725"),
    ("Köping", "731"), ("Arboga", "732"), ("Sala", "733"), ("Hallstahammar", "734"),
    ("Surahammar", "735"), ("Kungsör", "736"), ("Fagersta", "737"), ("Norberg", "738"),
    ("Skinnskatteberg", "739"),
)  # fmt: skip

# PTS reserves 070-1740605 to 070-1740699 for use in fiction, so these numbers reach no one.
_FICTIONAL_MOBILE_FIRST, _FICTIONAL_MOBILE_LAST = 1740605, 1740699


def given_names(rng: Random, sex: str) -> list[str]:
    """One given name, or two for about a third of people."""
    pool = MALE_NAMES if sex == "male" else FEMALE_NAMES
    first = rng.choice(pool)
    if rng.random() < 0.33:
        second = rng.choice(pool)
        if second != first:
            return [first, second]
    return [first]


def family_name(rng: Random) -> str:
    """A family name, sometimes double-barrelled."""
    name = rng.choice(FAMILY_NAMES)
    if rng.random() < 0.04:
        other = rng.choice(FAMILY_NAMES)
        if other != name:
            return f"{name} {other}"
    return name


def address(rng: Random, town: tuple[str, str] | None = None) -> dict[str, object]:
    """A FHIR home Address in a town of the region."""
    city, prefix = town or rng.choice(TOWNS)
    line = f"{rng.choice(STREETS)} {rng.randint(1, 60)}"
    if rng.random() < 0.3:
        line += f" lgh {rng.randint(10, 16)}{rng.randint(1, 9):02d}"
    return {
        "use": "home",
        "line": [line],
        "city": city,
        "postalCode": f"{prefix} {rng.randint(30, 99):02d}",
        "country": "SE",
    }


def mobile(rng: Random) -> str:
    """A fictional Swedish mobile number in E.164 form."""
    return f"+4670{rng.randint(_FICTIONAL_MOBILE_FIRST, _FICTIONAL_MOBILE_LAST)}"
