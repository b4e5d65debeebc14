//! STUB: replaced by the embedded redb implementation.
use std::path::Path;

use async_trait::async_trait;

use super::*;

pub struct EmbeddedStore;

impl EmbeddedStore {
    /// Opens (or creates) the database file `wpfleet.redb` under `dir`.
    pub fn open(_dir: &Path) -> StoreResult<Self> {
        todo!()
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, _key: &InstanceKey) -> StoreResult<Option<Instance>> {
        todo!()
    }
    async fn list(&self, _tenant: Option<&TenantId>, _page: PageRequest) -> StoreResult<Page> {
        todo!()
    }
    async fn create(&self, _instance: Instance) -> StoreResult<Instance> {
        todo!()
    }
    async fn update(
        &self,
        _key: &InstanceKey,
        _expected_version: Option<&str>,
        _mutate: Mutation<'_>,
    ) -> StoreResult<Updated> {
        todo!()
    }
    async fn write_status(&self, _key: &InstanceKey, _g: u64, _status: Status) -> StoreResult<()> {
        todo!()
    }
    async fn request_reconcile(
        &self,
        _keys: &[InstanceKey],
        _request: &ReconcileRequest,
    ) -> StoreResult<usize> {
        todo!()
    }
    async fn delete(&self, _key: &InstanceKey) -> StoreResult<bool> {
        todo!()
    }
}
