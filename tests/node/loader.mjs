// broker-client 0.0.8 ships ES module syntax in a package without "type": "module" and imports
// './utils' without an extension, as bundlers allow. These hooks let plain Node load it unchanged.
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
