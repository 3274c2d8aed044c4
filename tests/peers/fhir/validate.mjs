// Validates FHIR R4 JSON files with the npm `fhir` package (FHIR.js), unexpected elements
// being errors. TEST USE ONLY.
//
//   node validate.mjs FILE...
//
// Prints one JSON line per file, {"file", "valid", "messages": [{severity, location,
// message}]}, and exits 0 when every file is valid, 1 when one is not, 2 on bad input.
import { readFileSync } from 'node:fs';
import fhirPackage from 'fhir';

const { Fhir } = fhirPackage;
const fhir = new Fhir();
const files = process.argv.slice(2);
if (!files.length) {
  console.error('usage: node validate.mjs FILE...');
  process.exit(2);
}
let allValid = true;
for (const file of files) {
  let resource;
  try {
    resource = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    console.error(`${file}: ${err.message}`);
    process.exit(2);
  }
  const { valid, messages } = fhir.validate(resource, { errorOnUnexpected: true });
  allValid &&= valid;
  console.log(JSON.stringify({ file, valid, messages }));
}
process.exit(allValid ? 0 : 1);
