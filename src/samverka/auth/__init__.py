"""The built-in SMART on FHIR authorization server and scope enforcement: https://hl7.org/fhir/smart-app-launch/"""
