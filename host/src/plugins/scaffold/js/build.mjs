// Builds ARTIFACT from app.js, against the contract in wit/, with
// componentize-js's Node API (`npm install` once first). The `http` and
// `fetch-event` features are off: they would import wasi:http, which
// Switchyard does not grant. The component is renamed into place, so a
// running proxy never reads half a file.
import { componentize } from '@bytecodealliance/componentize-js';
import { rename, writeFile } from 'node:fs/promises';

process.chdir(new URL('.', import.meta.url).pathname);
const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: 'WORLD',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile('ARTIFACT.incoming', component);
await rename('ARTIFACT.incoming', 'ARTIFACT');
console.log(`built ARTIFACT (${component.length} bytes)`);
