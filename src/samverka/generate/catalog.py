"""Hand-written clinical catalogue for synthetic data: ICD-10-SE diagnoses, NPU lab tests, ATC drugs.

Codes and Swedish texts are written from public knowledge (Socialstyrelsen's ICD-10-SE, the NPU
terminology, WHO's ATC index and Swedish product names) and are meant to look right, not to be a
reference. Reference ranges are typical adult Swedish ranges, rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Diagnosis:
    """An ICD-10-SE code with its Swedish display text."""

    code: str
    display: str


@dataclass(frozen=True)
class Drug:
    """An ATC substance: WHO name (coding display), Swedish product text and a dosage instruction."""

    atc: str
    who_name: str
    text: str
    dosage: str = "1 tablett 1 gång dagligen"


@dataclass(frozen=True)
class LabTest:
    """An NPU lab test with UCUM unit and sex-specific reference limits (None = no limit)."""

    npu: str
    display: str
    ucum: str
    unit: str
    female: tuple[float | None, float | None]
    male: tuple[float | None, float | None]
    normal: tuple[float, float]  # mean and standard deviation in a healthy person
    decimals: int = 0
    floor: float = 0.0


@dataclass(frozen=True)
class Chronic:
    """A chronic condition: who gets it, what is prescribed and which lab tests follow it up."""

    key: str
    diagnosis: Diagnosis
    min_age: int
    prevalence: float  # among eligible people under 65; doubled from 65
    regimens: tuple[tuple[str, ...], ...]  # alternative drug sets (ATC codes); one is chosen
    panel: tuple[str, ...] = ()
    effects: dict[str, tuple[float, float]] = field(default_factory=dict)  # lab key -> (mean, sd)
    sex: str | None = None
    max_age: int = 120


@dataclass(frozen=True)
class Acute:
    """An acute diagnosis seen in a setting (AMB, EMER or IMP) with its drugs, labs and lab effects."""

    diagnosis: Diagnosis
    drugs: tuple[str, ...] = ()
    panel: tuple[str, ...] = ()
    effects: dict[str, tuple[float, float]] = field(default_factory=dict)
    min_age: int = 0


# fmt: off
LAB: dict[str, LabTest] = {
    "hb": LabTest("NPU02319", "B-Hemoglobin (Hb)", "g/L", "g/L", (117, 153), (134, 170), (142, 11)),
    "lpk": LabTest("NPU02593", "B-Leukocyter", "10*9/L", "10^9/L", (3.5, 8.8), (3.5, 8.8), (6.0, 1.4), 1),
    "tpk": LabTest("NPU03568", "B-Trombocyter", "10*9/L", "10^9/L", (165, 387), (145, 348), (260, 50)),
    "crp": LabTest("NPU19748", "P-CRP", "mg/L", "mg/L", (None, 5), (None, 5), (2, 1.5), floor=1),
    "na": LabTest("NPU03429", "P-Natrium", "mmol/L", "mmol/L", (137, 145), (137, 145), (140, 2)),
    "k": LabTest("NPU03230", "P-Kalium", "mmol/L", "mmol/L", (3.5, 4.4), (3.5, 4.4), (4.0, 0.25), 1),
    "krea": LabTest("NPU04998", "P-Kreatinin", "umol/L", "µmol/L", (45, 90), (60, 105), (75, 13)),
    "gluk": LabTest("NPU02192", "P-Glukos", "mmol/L", "mmol/L", (4.0, 6.0), (4.0, 6.0), (5.3, 0.5), 1),
    "hba1c": LabTest("NPU27300", "B-HbA1c", "mmol/mol", "mmol/mol", (27, 42), (27, 42), (36, 3.5)),
    "tsh": LabTest("NPU03577", "P-TSH", "m[IU]/L", "mIE/L", (0.4, 4.0), (0.4, 4.0), (1.8, 0.8), 2, 0.05),
    "kol": LabTest("NPU01566", "P-Kolesterol", "mmol/L", "mmol/L", (None, 5.0), (None, 5.0), (4.9, 0.8), 1),
    "ldl": LabTest("NPU01568", "P-LDL-kolesterol", "mmol/L", "mmol/L", (None, 3.0), (None, 3.0), (2.9, 0.7), 1),
    "hdl": LabTest("NPU01567", "P-HDL-kolesterol", "mmol/L", "mmol/L", (1.2, None), (1.0, None), (1.4, 0.3), 1),
    "tg": LabTest("NPU04094", "P-Triglycerid", "mmol/L", "mmol/L", (0.45, 2.6), (0.45, 2.6), (1.3, 0.5), 1, 0.3),
    "alat": LabTest("NPU19651", "P-ALAT", "ukat/L", "µkat/L", (None, 0.76), (None, 1.1), (0.45, 0.15), 2, 0.1),
    "alb": LabTest("NPU19673", "P-Albumin", "g/L", "g/L", (36, 48), (36, 48), (41, 3)),
    "bnp": LabTest("NPU21571", "P-NT-proBNP", "ng/L", "ng/L", (None, 300), (None, 300), (90, 60), floor=10),
    "ferr": LabTest("NPU19763", "P-Ferritin", "ug/L", "µg/L", (13, 150), (30, 400), (110, 50), floor=3),
    "inr": LabTest("NPU01685", "P-PK(INR)", "{INR}", "INR", (0.9, 1.2), (0.9, 1.2), (1.0, 0.08), 1, 0.8),
}

DRUGS: dict[str, Drug] = {
    d.atc: d
    for d in (
        Drug("C09AA05", "ramipril", "Ramipril 5 mg tablett"),
        Drug("C09CA01", "losartan", "Losartan 50 mg tablett"),
        Drug("C08CA01", "amlodipine", "Amlodipin 5 mg tablett"),
        Drug("C03AA03", "hydrochlorothiazide", "Hydroklortiazid 25 mg tablett"),
        Drug("A10BA02", "metformin", "Metformin 500 mg tablett", "1 tablett 2 gånger dagligen"),
        Drug("A10AE04", "insulin glargine", "Insulin glargin 100 E/ml injektionsvätska", "Enligt ordination"),
        Drug("C10AA05", "atorvastatin", "Atorvastatin 20 mg tablett", "1 tablett till kvällen"),
        Drug("C10AA01", "simvastatin", "Simvastatin 20 mg tablett", "1 tablett till kvällen"),
        Drug("B01AF02", "apixaban", "Apixaban 5 mg tablett", "1 tablett 2 gånger dagligen"),
        Drug("B01AA03", "warfarin", "Warfarin 2,5 mg tablett", "Enligt doseringsschema"),
        Drug("C07AB02", "metoprolol", "Metoprolol 50 mg depottablett"),
        Drug("C07AB07", "bisoprolol", "Bisoprolol 5 mg tablett"),
        Drug("C03CA01", "furosemide", "Furosemid 40 mg tablett", "1 tablett på morgonen"),
        Drug("C03DA01", "spironolactone", "Spironolakton 25 mg tablett"),
        Drug("H03AA01", "levothyroxine sodium", "Levotyroxin 50 mikrogram tablett", "1 tablett på morgonen"),
        Drug("R03AC02", "salbutamol", "Salbutamol 0,1 mg/dos inhalationsspray", "1-2 inhalationer vid behov"),
        Drug("R03BA02", "budesonide", "Budesonid 200 mikrogram/dos inhalationspulver",
             "1 inhalation 2 gånger dagligen"),
        Drug("R03BB04", "tiotropium bromide", "Tiotropium 2,5 mikrogram/dos inhalationsspray",
             "2 inhalationer 1 gång dagligen"),
        Drug("N06AB06", "sertraline", "Sertralin 50 mg tablett"),
        Drug("N06AB04", "citalopram", "Citalopram 20 mg tablett"),
        Drug("N06AX11", "mirtazapine", "Mirtazapin 15 mg tablett", "1 tablett till natten"),
        Drug("A02BC01", "omeprazole", "Omeprazol 20 mg enterokapsel"),
        Drug("M05BA04", "alendronic acid", "Alendronsyra 70 mg tablett", "1 tablett 1 gång per vecka"),
        Drug("B03AA07", "ferrous sulfate", "Järn(II)sulfat 100 mg depottablett"),
        Drug("N02BE01", "paracetamol", "Paracetamol 500 mg tablett", "2 tabletter vid behov, högst 4 gånger dagligen"),
        Drug("M01AE01", "ibuprofen", "Ibuprofen 400 mg tablett", "1 tablett vid behov, högst 3 gånger dagligen"),
        Drug("J01CA08", "pivmecillinam", "Pivmecillinam 200 mg tablett", "1 tablett 3 gånger dagligen i 5 dagar"),
        Drug("J01XE01", "nitrofurantoin", "Nitrofurantoin 50 mg tablett", "1 tablett 3 gånger dagligen i 5 dagar"),
        Drug("J01CE02", "phenoxymethylpenicillin", "Fenoximetylpenicillin 1 g tablett",
             "1 tablett 3 gånger dagligen i 10 dagar"),
        Drug("J01CA04", "amoxicillin", "Amoxicillin 500 mg tablett", "1 tablett 3 gånger dagligen i 7 dagar"),
        Drug("J01AA02", "doxycycline", "Doxycyklin 100 mg tablett", "2 tabletter dag 1, därefter 1 tablett dagligen"),
        Drug("N02CC01", "sumatriptan", "Sumatriptan 50 mg tablett", "1 tablett vid migränanfall"),
        Drug("D07AC01", "betamethasone", "Betametason 0,1 % kräm", "Appliceras 1 gång dagligen"),
        Drug("B01AC06", "acetylsalicylic acid", "Acetylsalicylsyra 75 mg tablett"),
        Drug("H02AB06", "prednisolone", "Prednisolon 5 mg tablett", "6 tabletter på morgonen i 5 dagar"),
        Drug("N05CF01", "zopiclone", "Zopiklon 5 mg tablett", "1 tablett till natten vid behov"),
        Drug("B01AB04", "dalteparin", "Dalteparin 5000 IE/0,2 ml injektionsvätska", "1 injektion subkutant dagligen"),
    )
}

CHRONIC: tuple[Chronic, ...] = (
    Chronic("hypertension", Diagnosis("I10", "Essentiell hypertoni"), 35, 0.16,
            (("C09AA05",), ("C08CA01",), ("C09CA01", "C03AA03")), ("krea", "k", "na")),
    Chronic("t2d", Diagnosis("E11.9", "Typ 2-diabetes utan komplikationer"), 35, 0.05,
            (("A10BA02",), ("A10BA02", "C10AA05")), ("hba1c", "gluk", "krea", "kol", "ldl"),
            {"hba1c": (58, 10), "gluk": (8.5, 2.0)}),
    Chronic("t1d", Diagnosis("E10.9", "Typ 1-diabetes utan komplikationer"), 1, 0.006,
            (("A10AE04",),), ("hba1c", "gluk", "krea"), {"hba1c": (60, 10), "gluk": (9.0, 3.0)}),
    Chronic("lipids", Diagnosis("E78.0", "Ren hyperkolesterolemi"), 40, 0.07,
            (("C10AA05",), ("C10AA01",)), ("kol", "ldl", "hdl", "tg", "alat"), {"kol": (6.2, 0.8), "ldl": (4.0, 0.7)}),
    Chronic("af", Diagnosis("I48.0", "Paroxysmalt förmaksflimmer"), 50, 0.04,
            (("B01AF02", "C07AB02"), ("B01AA03", "C07AB02")), ("hb", "krea", "k")),
    Chronic("hf", Diagnosis("I50.9", "Hjärtsvikt, ospecificerad"), 60, 0.025,
            (("C03CA01", "C07AB07", "C09AA05"), ("C03CA01", "C03DA01", "C07AB07")), ("bnp", "krea", "k", "na"),
            {"bnp": (1800, 900), "krea": (105, 25)}),
    Chronic("hypothyroidism", Diagnosis("E03.9", "Hypotyreos, ospecificerad"), 20, 0.06, (("H03AA01",),), ("tsh",),
            {"tsh": (3.0, 1.8)}, sex="female"),
    Chronic("asthma", Diagnosis("J45.9", "Astma, ospecificerad"), 3, 0.06, (("R03AC02", "R03BA02"), ("R03AC02",))),
    Chronic("copd", Diagnosis("J44.9", "Kroniskt obstruktiv lungsjukdom, ospecificerad"), 50, 0.03,
            (("R03BB04", "R03AC02"),), ("hb",)),
    Chronic("depression", Diagnosis("F32.9", "Depressiv episod, ospecificerad"), 15, 0.05,
            (("N06AB06",), ("N06AB04",), ("N06AX11",))),
    Chronic("anxiety", Diagnosis("F41.1", "Generaliserat ångestsyndrom"), 15, 0.03, (("N06AB06",), ())),
    Chronic("ckd", Diagnosis("N18.3", "Kronisk njursjukdom, stadium 3"), 55, 0.03, ((),),
            ("krea", "k", "hb", "alb"), {"krea": (150, 30), "hb": (122, 10)}),
    Chronic("osteoporosis", Diagnosis("M81.9", "Osteoporos, ospecificerad"), 55, 0.05, (("M05BA04",),), sex="female"),
    Chronic("gerd", Diagnosis("K21.9", "Gastroesofageal refluxsjukdom utan esofagit"), 18, 0.05, (("A02BC01",),)),
    Chronic("gonarthrosis", Diagnosis("M17.1", "Annan primär gonartros"), 50, 0.05, (("N02BE01",),)),
    Chronic("iron", Diagnosis("D50.9", "Järnbristanemi, ospecificerad"), 15, 0.03, (("B03AA07",),), ("hb", "ferr"),
            {"hb": (106, 8), "ferr": (8, 4)}, sex="female", max_age=55),
    Chronic("psoriasis", Diagnosis("L40.0", "Psoriasis vulgaris"), 10, 0.02, (("D07AC01",),)),
    Chronic("migraine", Diagnosis("G43.9", "Migrän, ospecificerad"), 12, 0.05, (("N02CC01",),)),
    Chronic("obesity", Diagnosis("E66.9", "Fetma, ospecificerad"), 18, 0.04, ((),), ("gluk", "kol")),
)

_INFECTION = {"crp": (60.0, 35.0), "lpk": (11.5, 2.5)}
_SEVERE = {"crp": (150.0, 70.0), "lpk": (14.0, 3.5)}

ACUTE_AMB: tuple[Acute, ...] = (
    Acute(Diagnosis("J06.9", "Akut övre luftvägsinfektion, ospecificerad")),
    Acute(Diagnosis("J02.9", "Akut faryngit, ospecificerad"), ("J01CE02",), ("crp",), {"crp": (35.0, 20.0)}),
    Acute(Diagnosis("J01.9", "Akut sinuit, ospecificerad"), ("J01CE02",), ("crp",), {"crp": (30.0, 15.0)}),
    Acute(Diagnosis("J20.9", "Akut bronkit, ospecificerad"), (), ("crp",), {"crp": (15.0, 8.0)}),
    Acute(Diagnosis("N39.0", "Urinvägsinfektion utan angiven lokalisation"), ("J01CA08",), min_age=12),
    Acute(Diagnosis("N39.0", "Urinvägsinfektion utan angiven lokalisation"), ("J01XE01",), min_age=12),
    Acute(Diagnosis("M54.5", "Lumbago"), ("M01AE01",), min_age=16),
    Acute(Diagnosis("U07.1", "Covid-19, virus identifierat"), (), ("crp",), {"crp": (20.0, 12.0)}),
    Acute(Diagnosis("B34.9", "Virusinfektion, ospecificerad")),
    Acute(Diagnosis("G47.0", "Insomni"), ("N05CF01",), min_age=18),
)

_EMER_PANEL = ("hb", "lpk", "tpk", "crp", "na", "k", "krea", "gluk")

ACUTE_EMER: tuple[Acute, ...] = (
    Acute(Diagnosis("R07.4", "Bröstsmärtor, ospecificerade"), (), _EMER_PANEL, min_age=18),
    Acute(Diagnosis("R10.4", "Andra och ospecificerade buksmärtor"), ("N02BE01",), (*_EMER_PANEL, "alat")),
    Acute(Diagnosis("J18.9", "Pneumoni, ospecificerad"), ("J01CE02",), _EMER_PANEL, _INFECTION),
    Acute(Diagnosis("J18.9", "Pneumoni, ospecificerad"), ("J01AA02",), _EMER_PANEL, _INFECTION, min_age=12),
    Acute(Diagnosis("S52.5", "Fraktur på nedre delen av radius"), ("N02BE01",), ("hb",)),
    Acute(Diagnosis("R55", "Svimning och kollaps"), (), _EMER_PANEL),
    Acute(Diagnosis("N39.0", "Urinvägsinfektion utan angiven lokalisation"), ("J01CA08",), _EMER_PANEL,
          {"crp": (40.0, 25.0)}, min_age=12),
)

ACUTE_IMP: tuple[Acute, ...] = (
    Acute(Diagnosis("I21.9", "Akut hjärtinfarkt, ospecificerad"), ("B01AC06", "C10AA05", "C07AB02"),
          (*_EMER_PANEL, "kol", "ldl"), min_age=35),
    Acute(Diagnosis("I63.9", "Cerebral infarkt, ospecificerad"), ("B01AC06", "C10AA05"), _EMER_PANEL, min_age=40),
    Acute(Diagnosis("J18.9", "Pneumoni, ospecificerad"), ("J01CA04", "B01AB04"), (*_EMER_PANEL, "alb"), _SEVERE),
    Acute(Diagnosis("J44.1", "Kroniskt obstruktiv lungsjukdom med akut exacerbation, ospecificerad"),
          ("H02AB06", "J01AA02"), _EMER_PANEL, _INFECTION, min_age=45),
    Acute(Diagnosis("A41.9", "Sepsis, ospecificerad"), ("B01AB04",), (*_EMER_PANEL, "alb", "alat"), _SEVERE),
    Acute(Diagnosis("I50.9", "Hjärtsvikt, ospecificerad"), ("C03CA01", "B01AB04"), (*_EMER_PANEL, "bnp"),
          {"bnp": (4500.0, 2000.0)}, min_age=50),
    Acute(Diagnosis("S72.0", "Fraktur på lårbenshalsen"), ("N02BE01", "B01AB04"), _EMER_PANEL, min_age=60),
)

# fmt: on

DAILY_PANEL = ("hb", "crp", "krea", "k", "na")
