export { MqttConnection } from './MqttConnection';
export { MqttConnectionResolver, type MqttResolvedConnection } from './config/MqttConnectionResolver';
export type { MqttServer, MqttProtocol } from './config/MqttUri';
export { MqttSubscription } from './MqttSubscription';
export type { IMqttMessageListener } from './IMqttMessageListener';
export { MqttErrorCode, type MqttErrorCodeValue } from './errors/MqttErrorCode';
export type { MqttConnectionState, MqttConnectionStatus, MqttStateListener } from './MqttConnectionStatus';
