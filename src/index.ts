/**
 * pip-mqtt-nodex: MQTT messaging components for Pip.Services (Node.js, async/await).
 * @packageDocumentation
 */
export * from './connect';
export * from './queues';
export * from './build';
