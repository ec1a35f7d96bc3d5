export { MqttConnection } from './MqttConnection';
export { MqttConnectionResolver, type MqttResolvedConnection, type MqttServer, type MqttProtocol } from './config/MqttConnectionResolver';
export { MqttSubscription } from './MqttSubscription';
export type { IMqttMessageListener } from './IMqttMessageListener';
export { MqttErrorCode, type MqttErrorCodeValue } from './errors/MqttErrorCode';
export type { MqttConnectionState, MqttConnectionStatus, MqttStateListener } from './MqttConnectionStatus';
